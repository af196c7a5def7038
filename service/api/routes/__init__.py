"""HTTP routes: thin translations between JSON and the application layer."""

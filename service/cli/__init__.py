"""Command-line entry points: `nobackfill serve | migrate | worker | evaluate | jobs watch`."""

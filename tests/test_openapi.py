"""The OpenAPI document tells the truth about bodies and errors (schemathesis checks the statuses
against a live server in test_fuzz.py; this checks the document's shape)."""

from __future__ import annotations

from service.app import create_app
from service.settings import Settings


def openapi(tmp_path) -> dict:
    return create_app(Settings(data_dir=tmp_path)).openapi()


def test_every_error_response_is_the_one_error_schema(tmp_path) -> None:
    doc = openapi(tmp_path)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert set(doc["components"]["schemas"]["ErrorOut"]["properties"]) == {"error", "detail", "field", "errors"}
    seen = 0
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            for code, response in op["responses"].items():
                if int(code) >= 400 and path != "/readyz":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, code)
                    seen += 1
    assert seen > 100


def test_bodies_and_implied_statuses_are_documented(tmp_path) -> None:
    doc = openapi(tmp_path)
    query = doc["paths"]["/v1/collections/{name}/query"]["post"]
    assert query["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/QueryRequest"}
    assert {"401", "403", "404", "409", "413", "415", "422", "429", "503"} <= set(query["responses"])
    for path, method in (("/v1/models", "post"), ("/v1/collections", "post"), ("/v1/upgrades/{upgrade_id}/pairs",
                                                                            "post"),
                         ("/v1/upgrades/{upgrade_id}/activate", "post"), ("/v1/upgrades/{upgrade_id}/training", "put")):
        op = doc["paths"][path][method]
        assert "requestBody" in op and {"413", "415", "422"} <= set(op["responses"]), (method, path)
    assert "404" in doc["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]  # path ids are unknown, not 422
    assert "503" in doc["paths"]["/readyz"]["get"]["responses"]
    assert "PayloadFilter" in str(doc["components"]["schemas"]["QueryRequest"]) or "AndFilter" in str(
        doc["components"]["schemas"])

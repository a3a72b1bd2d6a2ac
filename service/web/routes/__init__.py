"""Server-rendered pages (not part of the JSON API's OpenAPI document)."""

"""The worker's HTTP surface: the API, its OpenAPI document, the dashboard."""

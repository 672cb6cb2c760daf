"""The HTTP layer shared by all services: endpoints, problems, middleware, OpenAPI, app assembly."""

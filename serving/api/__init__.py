"""HTTP routes of the scoring API, one router per resource, gathered by serving.app.create_app."""

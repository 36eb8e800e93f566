"""churnguard training package."""

"""churnguard features package."""

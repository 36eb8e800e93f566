"""churnguard serving package."""

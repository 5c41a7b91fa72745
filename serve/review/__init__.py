"""The review app for a district run: teachers check and correct scores (issue 28; the store first)."""

"""Test helpers shared by several test modules (real processes, no mocks of project code)."""

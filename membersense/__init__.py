"""MemberSense: a self-hosted REST gateway to a Discord bot's guild data."""

"""Chat settings: what server and group admins set in chat, between the config and requests."""

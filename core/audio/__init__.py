"""Audio files: encoding clips for delivery."""

"""Image → caption → prompt → sound: the models and how they are loaded."""

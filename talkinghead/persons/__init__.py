"""What one person's files hold: model files (checkpoint), prepared shots, and avatars (paper §3.3); below training and inference."""

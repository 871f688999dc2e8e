"""Long-running MLflow processes: the local UI and the team's tracking server."""

"""What runs in the supervisor process: a plain synchronous loop that forks worker processes, watches and replaces
them, rescues the jobs of dead ones from short-lived children, and answers health and metrics over HTTP. Nothing
here waits on the database."""

"""The shared server runtime: the App that hosts the services, config, database, interceptors
(auth, byte budget, errors, metrics), reflection, migrations, the outbox and its worker, and the
conversion, text, validation and pagination helpers every service uses. Never imports the
operator tooling (servers/tooling)."""

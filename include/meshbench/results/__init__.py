"""Results storage: schema, migrations, Fortio result parsing, validity rules and loading."""

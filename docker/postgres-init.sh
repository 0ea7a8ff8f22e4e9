#!/bin/sh
# Runs once, when the PostgreSQL data volume is first initialised: the prescore catalog gets its own role and
# database next to Airflow's metadata database (POSTGRES_DB). The catalog schema itself is migrated by
# prescore on first use.
set -eu
psql -v ON_ERROR_STOP=1 -v catalog_password="$CATALOG_DB_PASSWORD" \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE prescore LOGIN PASSWORD :'catalog_password';
CREATE DATABASE prescore OWNER prescore;
SQL

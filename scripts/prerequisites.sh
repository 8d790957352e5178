# Sourced by the scripts: the wasm target for guests and a Postgres 15 server binary.
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
if [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
  else
    echo "error: Postgres 15 is missing; install the postgresql-15 package" >&2
    exit 1
  fi
fi

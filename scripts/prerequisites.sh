# Sourced by the scripts: the wasm target for guests, a Postgres 15 server binary,
# and headless Chromium with its WebDriver for the dashboard's browser tests.
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
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "error: Chromium is missing; install the chromium and chromium-driver packages" >&2
    exit 1
  fi
fi

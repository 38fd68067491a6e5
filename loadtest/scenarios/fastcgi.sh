# Scenario: fastcgi (sourced by run.sh; bash). A tiny PHP script behind php-fpm 8.2 (Debian's
# php8.2-fpm, one static pool of 24 workers, started by this scenario as the backend), reached
# through ringway's FastCGI transport and nginx's fastcgi_pass, both keeping FastCGI connections
# open (ringway FCGI_KEEP_CONN and its pool, nginx `fastcgi_keep_conn on` + `keepalive`).
# 16 client connections: each pooled FastCGI connection holds a php-fpm worker for its life, so
# the pool must stay below pm.max_children (here 16 in flight + idle < 24 workers).
SCENARIO_DESC='PHP "hello world\n" through php-fpm (FastCGI, pooled connections), keep-alive clients, 16 connections'
SCENARIO_PATH=/hello.php
SCENARIO_EXPECT_STATUS=200
SCENARIO_EXPECT_BODY=$'hello world\n'
SCENARIO_CONNECTIONS=16
SCENARIO_PROXIES='ringway nginx'
SCENARIO_SKIP_BACKEND_PROBE=1 # php-fpm speaks FastCGI, not HTTP
SCENARIO_TEMPLATE_RINGWAY=ringway-fastcgi.yaml
SCENARIO_TEMPLATE_NGINX=nginx-fastcgi.conf
PHP_FPM=${PHP_FPM:-/usr/sbin/php-fpm8.2}

scenario_setup() { # run dir
  [[ -x $PHP_FPM ]] || die "php-fpm missing: apt-get install -y php8.2-fpm (or set PHP_FPM)"
  mkdir -p "$1/www" "$1/php-fpm"
  printf '<?php echo "hello world\\n";\n' >"$1/www/hello.php"
}

scenario_backend_cmd() { # listen address
  local conf=$RUN_DIR/php-fpm/php-fpm.conf user='' root=()
  # As root php-fpm wants its workers' user named, and -R to allow root.
  if [[ $(id -u) == 0 ]]; then user=$'user = root\ngroup = root\n'; root=(-R); fi
  cat >"$conf" <<CONF
[global]
pid = $RUN_DIR/php-fpm/php-fpm.pid
error_log = $RUN_DIR/logs/php-fpm.error.log
daemonize = no
[www]
${user}listen = $1
listen.backlog = 1024
pm = static
pm.max_children = 24
pm.max_requests = 0
CONF
  BACKEND_CMD=("$PHP_FPM" --nodaemonize -n "${root[@]}" -y "$conf" -p "$RUN_DIR/php-fpm")
}

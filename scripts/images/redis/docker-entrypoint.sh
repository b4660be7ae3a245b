#!/bin/sh
# The official redis image's entrypoint, behaviour for behaviour (docs/test-images.md).
set -e

# First argument an option (-x, --x) or a *.conf file: it is for redis-server.
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

# As root: give the working directory (/data) to redis, then run as redis.
if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
	find . \! -user redis -exec chown redis '{}' +
	exec gosu redis "$0" "$@"
fi

# Files Redis writes (dumps, AOF) are private unless a umask was chosen already.
um="$(umask)"
if [ "$um" = '0022' ]; then
	umask 0077
fi

exec "$@"

#!/bin/sh
# Build the sealstream Debian package (server and agent: one binary, two systemd units, example
# configurations in /etc/sealstream) with cargo-deb, and print the .deb's path.
#
#   ops/build-deb.sh                      # a release build, then target/debian/sealstream_*.deb
#   CARGO_TARGET_DIR=/other ops/build-deb.sh
#   ops/build-deb.sh --deb-revision 2     # further arguments go to `cargo deb`
#
# The package is described by [package.metadata.deb] in Cargo.toml. Three of its files are made
# here from the checkout's own, with the paths an installed system uses (each change checked,
# so that an edit to the originals fails this build rather than ship a wrong path):
#   ops/sealstream.service  binary /usr/local/bin/sealstream -> /usr/bin/sealstream
#   config/serve.toml       data_dir "../var/sealstream"      -> "/var/lib/sealstream"
#   config/agent.toml       spool_dir "spool"                 -> "/var/lib/sealstream/agent-spool"
# into target/deb-assets/ (inside the checkout whatever CARGO_TARGET_DIR says, as Cargo.toml
# names them relative to it), beside ops/sealstream-agent.service.
set -eu

cd "$(dirname "$0")/.."
stage=target/deb-assets

die() {
    echo "build-deb: $*" >&2
    exit 1
}

# $1 staged file, $2 the exact line it must hold, $3 the original it was made from.
expect() {
    grep -qxF "$2" "$1" || die "$3 no longer has the line this script rewrites (expected in $1: $2); update ops/build-deb.sh"
}

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: installing cargo-deb (cargo install --locked cargo-deb)" >&2
    cargo install --locked cargo-deb
fi

rm -rf "$stage"
mkdir -p "$stage"
sed -e 's#^ExecStart=/usr/local/bin/sealstream #ExecStart=/usr/bin/sealstream #' \
    ops/sealstream.service >"$stage/sealstream.service"
expect "$stage/sealstream.service" \
    'ExecStart=/usr/bin/sealstream serve --config /etc/sealstream/serve.toml' ops/sealstream.service
cp ops/sealstream-agent.service "$stage/sealstream-agent.service"
expect "$stage/sealstream-agent.service" \
    'ExecStart=/usr/bin/sealstream agent --config /etc/sealstream/agent.toml --capture x11' \
    ops/sealstream-agent.service
{
    echo '# Installed by the sealstream Debian package: the server keeps its state in'
    echo '# /var/lib/sealstream, the one directory its systemd unit may write (data_dir below).'
    echo '#'
    sed -e 's#^data_dir = "\.\./var/sealstream"$#data_dir = "/var/lib/sealstream"#' config/serve.toml
} >"$stage/serve.toml"
expect "$stage/serve.toml" 'data_dir = "/var/lib/sealstream"' config/serve.toml
{
    echo '# Installed by the sealstream Debian package. `sealstream agents enroll` writes the'
    echo '# agent.toml to put here; keep spool_dir as below, the one directory the agent unit'
    echo '# (sealstream-agent.service, which records X11 with --capture x11) may write.'
    echo '#'
    sed -e 's#^spool_dir = "spool"$#spool_dir = "/var/lib/sealstream/agent-spool"#' config/agent.toml
} >"$stage/agent.toml"
expect "$stage/agent.toml" 'spool_dir = "/var/lib/sealstream/agent-spool"' config/agent.toml

# cargo-deb prints the package's path as its last line on standard output.
deb=$(cargo deb -p sealstream --locked "$@" | tail -n 1)
[ -f "$deb" ] || die "cargo deb did not name a package file (got: $deb)"
echo "$deb"

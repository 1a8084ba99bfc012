# Sourced by the scripts that work as a user outside the repository would (install_consumer, the README
# snippet tests, scripts/sizes.sh): install_prefix BUILD PREFIX [COMPONENT...] installs the build tree into
# PREFIX (and the named extra components), sets `libdir` to where the libraries went (lib, lib64 or
# lib/<multiarch>, as GNUInstallDirs decided) and points PKG_CONFIG_PATH there.
install_prefix() {
  _build=$1 _prefix=$2
  shift 2
  cmake --install "$_build" --prefix "$_prefix" >/dev/null
  for _component in "$@"; do
    cmake --install "$_build" --prefix "$_prefix" --component "$_component" >/dev/null
  done
  libdir=$(cd "$(dirname "$(find "$_prefix" -name cbslot.pc)")/.." && pwd)
  export PKG_CONFIG_PATH="$libdir/pkgconfig"
}

# Sourced by scripts/setup.sh and scripts/setup-kaggle.sh: the arguments they share.
#   setup_args NAME "$@"   --wheels DIR (or WHEELS=DIR): a wheel folder for pip
#                          -> findlinks=(--find-links /abs/DIR), or () without one
setup_args() {
  local name="$1"; shift
  WHEELS="${WHEELS:-}"
  while [ $# -gt 0 ]; do
    case "$1" in
      --wheels) WHEELS="$2"; shift 2 ;;
      *) echo "$name: unknown argument $1" >&2; exit 2 ;;
    esac
  done
  findlinks=()
  if [ -n "$WHEELS" ]; then
    [ -d "$WHEELS" ] || { echo "$name: wheel folder $WHEELS does not exist" >&2; exit 2; }
    findlinks=(--find-links "$(cd "$WHEELS" && pwd)")
  fi
}

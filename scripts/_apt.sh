# Shared helper: `need_apt WHY PKG...` installs the Debian packages that are missing, and only those,
# saying in one line what it installs and why; apt-get's own output goes to a log. Source it (after
# _env.sh), then call need_apt. Without root (or without apt-get) it says what to install and
# returns 1, so that a caller can skip what needs the package with a clear message.
APT_LOG="${TMPDIR:-/tmp}/airflow-provider-ahachat-apt.log"
need_apt() {
  local why=$1 missing=() pkg
  shift
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "Missing Debian packages (for $why): ${missing[*]}. Install them as root: apt-get install -y ${missing[*]}" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  echo "Installing Debian packages as root, for $why: ${missing[*]} (apt-get's output: $APT_LOG)" >&2
  if ! say_while "Installing ${missing[*]}" \
    bash -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"' apt "${missing[@]}" \
    >>"$APT_LOG" 2>&1; then
    echo "apt-get could not install ${missing[*]}; the end of $APT_LOG:" >&2
    tail -20 "$APT_LOG" >&2
    return 1
  fi
}

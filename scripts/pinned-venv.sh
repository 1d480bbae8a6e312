# Shared by the tool installers (sourced, not run): a venv holding exactly what a
# requirements file pins, hash-checked and from wheels only.
#
# pinned_venv VENV REQUIREMENTS: (re)creates VENV unless `pip freeze` there already lists
# exactly REQUIREMENTS' pins (names compared as pip normalises them).
pinned_venv() {
  local venv=$1 requirements=$2 wanted have
  wanted=$(grep -E '^[A-Za-z0-9_.-]+==' "$requirements" | sed 's/ .*//' | tr 'A-Z_' 'a-z-' | sort)
  have=$("$venv/bin/pip" freeze 2>/dev/null | tr 'A-Z_' 'a-z-' | sort || true)
  [ "$wanted" = "$have" ] && return 0
  python3 -c 'import venv, ensurepip' 2>/dev/null || {
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
      --no-install-recommends python3-venv
  }
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
    --only-binary=:all: -r "$requirements"
}

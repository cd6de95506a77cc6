#!/usr/bin/env bash
# Prints deb822 deb-src stanzas derived from the machine's Debian `deb`
# entries (deb822 .sources files and one-line sources.list entries): same
# URIs, suites, components and keys, so the mirror or proxy in use is kept.
# Only entries whose suites name this release's codename are taken.
set -euo pipefail
codename=$(. /etc/os-release; echo "${VERSION_CODENAME:-}")
[ -n "$codename" ] || exit 0
shopt -s nullglob
for f in /etc/apt/sources.list.d/*.sources; do
  awk -v code="$codename" '
    function flush() {
      if (types ~ /(^|[ \t])deb([ \t]|$)/ && suites ~ code && uris != "") {
        print "Types: deb-src"; print "URIs: " uris; print "Suites: " suites
        print "Components: " comps; if (key != "") print "Signed-By: " key; print ""
      }
      types = uris = suites = comps = key = ""; enabled = 1
    }
    /^[ \t]*#/ { next }
    /^[ \t]*$/ { flush(); next }
    /^Types:/      { sub(/^Types:[ \t]*/, "");      types = $0;  next }
    /^URIs:/       { sub(/^URIs:[ \t]*/, "");       uris = $0;   next }
    /^Suites:/     { sub(/^Suites:[ \t]*/, "");     suites = $0; next }
    /^Components:/ { sub(/^Components:[ \t]*/, ""); comps = $0;  next }
    /^Signed-By:/  { sub(/^Signed-By:[ \t]*/, "");  key = $0;    next }
    END { flush() }
  ' "$f"
done
# One-line entries: deb [opts] URI suite components...
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -f "$f" ] || continue
  while read -r kind rest; do
    [ "$kind" = deb ] || continue
    opts=""
    if [[ $rest == \[* ]]; then opts=${rest%%]*}; rest=${rest#*]}; fi
    read -r uri suite comps <<<"$rest"
    [[ $suite == "$codename"* ]] || continue
    printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n' "$uri" "$suite" "$comps"
    [[ $opts =~ signed-by=([^ ]+) ]] && printf 'Signed-By: %s\n' "${BASH_REMATCH[1]}"
    echo
  done <"$f"
done

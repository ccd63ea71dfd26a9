# A runnable Python 3 that serves HTTP, made without nixpkgs and without a binary cache.
#
# Every derivation is a plain `builtins.derivation` whose builder is the builder image's own
# /bin/sh. The builder image runs Nix with `sandbox = false`, so a build can read that image's
# files (/usr/bin/python3.11, /lib/<multiarch>/libc.so.6, ...). We copy the pieces into store paths
# and point them at each other with patchelf, which gives a small closure with real references:
#
#   python-http ──► python3 ──► glibc, zlib, expat      zlib ──► glibc      expat ──► glibc
#
# The result (python-http) is small, because the image copies its bin/ to /bin and its other
# top-level dirs to /usr/local (a big lib/ there would be a second copy of the stdlib):
#   bin/python3            symlink to <python3>/bin/python3
#   bin/pyvenv.cfg         `home = <python3>/bin`: /bin/python3 finds its stdlib in the store even
#                          if the image holds a copy of the binary instead of the symlink
#   bin/serve              optional: `serve [PORT [DIR]]` serves /usr/local/share/www
#   share/www/index.html   the page the image serves (at /usr/local/share/www)
#
# Why pyvenv.cfg: Debian's python3.11 was built with prefix /usr and finds its standard library
# next to the (symlink-resolved) path of its executable, or via the `home` of a pyvenv.cfg next to
# it. The symlink alone is enough when /bin/python3 stays a symlink; pyvenv.cfg makes a copy work
# too, with no PYTHONHOME.
let
  system = builtins.currentSystem;

  # Store path names carry the versions of what bookworm's packages ship (libc6 2.36, zlib1g
  # 1.2.13, libexpat1 2.5.0, python3.11 3.11.2), so the image's SBOM names them right.

  # Tools of the builder image, used by absolute path through PATH.
  path = "/usr/bin:/bin:/usr/sbin:/sbin";

  # The builder's python and the libraries it links against.
  hostPython = "/usr/bin/python3.11";
  pyVersion = "3.11";

  # Shared prelude: `lib NAME` prints the real path of the library NAME as python3.11 loads it.
  prelude = ''
    set -eu
    lib() {
      p=$(ldd ${hostPython} | awk -v n="$1" '$1 == n { print $3 }')
      [ -n "$p" ] || { echo "library $1 not found for ${hostPython}" >&2; exit 1; }
      readlink -f "$p"
    }
  '';

  mk = name: script: builtins.derivation {
    inherit name system;
    builder = "/bin/sh";
    args = [ "-c" (prelude + script) ];
    PATH = path;
  };

  # The dynamic loader, libc and libm of the builder image (what python3.11 needs from glibc).
  glibc = mk "glibc-2.36" ''
    mkdir -p $out/lib
    interp=$(patchelf --print-interpreter ${hostPython})
    cp -L "$interp" $out/lib/$(basename "$interp")
    cp -L "$(lib libc.so.6)" $out/lib/libc.so.6
    cp -L "$(lib libm.so.6)" $out/lib/libm.so.6
    chmod 0555 $out/lib/*.so*
  '';

  # A shared library of the builder image, with an rpath into the glibc store path.
  sharedLib = name: soname: mk name ''
    mkdir -p $out/lib
    cp -L "$(lib ${soname})" $out/lib/${soname}
    chmod u+w $out/lib/${soname}
    patchelf --set-rpath ${glibc}/lib $out/lib/${soname}
    chmod 0555 $out/lib/${soname}
  '';

  zlib = sharedLib "zlib-1.2.13" "libz.so.1";
  expat = sharedLib "expat-2.5.0" "libexpat.so.1";

  indexHtml = ''
    <!DOCTYPE html>
    <html>
    <head><meta charset="utf-8"><title>nixpack python-http</title></head>
    <body>
    <h1>Hello from a FROM-scratch Nix image</h1>
    <p>Served by Python's http.server from a Nix closure (glibc, zlib, expat, python).</p>
    </body>
    </html>
  '';

  serve = ''
    import http.server, os, sys
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    root = sys.argv[2] if len(sys.argv) > 2 else "/usr/local/share/www"
    if not os.path.isdir(root):
        root = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "share", "www")
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=root, **kw)
    print(f"serving {root} on 0.0.0.0:{port}", flush=True)
    http.server.ThreadingHTTPServer(("0.0.0.0", port), handler).serve_forever()
  '';

  # The interpreter and its standard library.
  python3 = mk "python3-3.11.2" ''
    mkdir -p $out/bin $out/lib

    # The interpreter, patched to load its libraries from the other store paths.
    cp -L ${hostPython} $out/bin/python3
    chmod u+w $out/bin/python3
    patchelf --set-interpreter ${glibc}/lib/$(basename "$(patchelf --print-interpreter ${hostPython})") \
             --set-rpath ${glibc}/lib:${zlib}/lib:${expat}/lib $out/bin/python3
    chmod 0555 $out/bin/python3

    # The standard library, without tests, GUI and packaging tools; symlinks into /etc dropped.
    tar -C /usr/lib -c \
      --exclude=__pycache__ --exclude='python${pyVersion}/test' --exclude='python${pyVersion}/idlelib' \
      --exclude='python${pyVersion}/tkinter' --exclude='python${pyVersion}/turtledemo' \
      --exclude='python${pyVersion}/turtle.py' --exclude='python${pyVersion}/ensurepip' \
      --exclude='python${pyVersion}/lib2to3' --exclude='python${pyVersion}/pydoc_data' \
      --exclude='python${pyVersion}/sitecustomize.py' --exclude='python${pyVersion}/config-*' \
      --exclude='python${pyVersion}/lib-dynload/_test*' --exclude='python${pyVersion}/lib-dynload/xx*' \
      --exclude='python${pyVersion}/lib-dynload/_ctypes_test*' \
      python${pyVersion} | tar -C $out/lib -x
    find $out/lib -type l ! -exec test -e {} \; -delete

    # Extension modules: keep those that need nothing beyond glibc, point them at the glibc path.
    for so in $out/lib/python${pyVersion}/lib-dynload/*.so; do
      keep=1
      for n in $(patchelf --print-needed "$so"); do
        case "$n" in libc.so.6|libm.so.6) ;; *) keep=0 ;; esac
      done
      if [ "$keep" = 1 ]; then
        chmod u+w "$so"
        patchelf --set-rpath ${glibc}/lib "$so"
      else
        rm -f "$so"
      fi
    done

    # Byte-compile with hash-based pycs: the store's mtimes are all 1, and it is read-only.
    ${hostPython} -m compileall -q -j 0 --invalidation-mode unchecked-hash \
      $out/lib/python${pyVersion} >/dev/null
  '';

  # The top-level result: what the image puts at /bin and /usr/local.
  pythonHttp = mk "python-http" ''
    mkdir -p $out/bin $out/share/www
    ln -s ${python3}/bin/python3 $out/bin/python3
    printf 'home = %s\ninclude-system-site-packages = false\nversion = %s\n' \
      "${python3}/bin" "$(${hostPython} -c 'import platform; print(platform.python_version())')" \
      > $out/bin/pyvenv.cfg

    cat > $out/share/www/index.html <<'EOF'
    ${indexHtml}EOF

    { echo "#!${python3}/bin/python3"; cat <<'EOF'
    ${serve}EOF
    } > $out/bin/serve
    chmod 0555 $out/bin/serve
  '';
in
pythonHttp

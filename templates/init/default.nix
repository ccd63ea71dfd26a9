# An example expression for nixpack: a store path written by the builder's
# own /bin/sh, so it needs neither nixpkgs nor the network. Replace it with
# your program, e.g. `(import <nixpkgs> { }).hello` once nixpkgs is pinned
# in nixpack.toml's [nixpkgs] table; its `bin` then lands at /bin.
builtins.derivation {
  name = "hello";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo 'Hello from nixpack' > $out" ];
}

// Package recipe makes the extensions people bake over and over declarative:
// a recipe (one small YAML file, embedded in the binary or loaded from a
// path) says where an upstream release is downloaded for each architecture,
// how each download is checked, which of its files go where under /usr, and
// which units, drop-ins, tmpfiles.d lines and default configs ship with it.
// Bake resolves a recipe for one version and architecture, downloads (through
// a cache keyed by sha256, optionally through a mirror), lays out a staged
// tree and hands it to builder.Build, the same builder `sysext build` uses.
//
// It lives outside builder/ on purpose: builder never touches the network,
// and this package is where the network is.
//
// Invariants: every download is checked against a sha256 (pinned in the
// recipe or on the command line, or taken from the upstream's published
// checksum file) before any of it is used; archives are unpacked by
// internal/extract with the rules of container layers (every name, symlink
// and hard link source resolved inside the unpacked tree; what they unpack
// to bounded by BakeOptions.MaxSize), so nothing an archive names is read
// from or written to outside it; nothing a recipe names is written outside
// the staged tree's /usr; a failed bake writes no image and leaves no temp
// file (the staged tree is removed, the cache only ever holds verified
// content). Not guaranteed: that an upstream keeps
// publishing under the URLs a catalog recipe names.
package recipe

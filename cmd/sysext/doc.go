// Command sysext builds, distributes and activates systemd-sysext images as
// OCI artifacts. This package only parses flags, calls one library
// function per command, prints the result and maps errors to exit codes;
// no other package imports it.
package main

package tool

import "syscall"

// terminate lets a tool clean up its own partial output before it dies.
var terminate = syscall.SIGTERM

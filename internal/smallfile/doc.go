// Package smallfile reads small files (release files, keys, /proc files)
// with a size limit, so that a huge or endless file (a FIFO, /dev/zero)
// cannot exhaust memory. It never reads more than limit+1 bytes.
package smallfile

package oci

import "os"

// DurableWrite writes size bytes (src repeated) to a new file at path the
// way Download writes a layer, without the network and the hash: reserve,
// write through the page cache with writeback started and fdatasync as it
// goes, fsync at the end. The benchmarks take it as the disk's floor for a
// durable fetch.
func DurableWrite(path string, src []byte, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := reserve(f, size); err != nil {
		return err
	}
	w := newBlobWriter(f)
	defer w.close()
	for off := int64(0); off < size; off += int64(len(src)) {
		if err := w.writeAt(src[:min(int64(len(src)), size-off)], off); err != nil {
			return err
		}
	}
	if err := w.finish(size); err != nil {
		return err
	}
	return f.Sync()
}

package ingest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// The record is a log of lines, each JSON followed by a space, its CRC-32C
// in hex and a newline; a line whose checksum does not match ends the log
// (a crash tore it). The first line is the header; then, in the order they
// happened:
//
//	{"w":[OFF,LEN]}           LEN bytes were written at OFF
//	{"sync":K}                the data of the first K "w" lines is durable
//	{"h":N,"state":"..."}     the hash state (sha256, marshalled) after N bytes
//
// The "w" lines after the last "sync" are trusted only in the boot that
// wrote them: a killed process leaves its writes in the page cache, a power
// loss may not. A "sync" line is written only after fdatasync returned, so
// it never claims bytes the disk may lack.
const (
	recordVersion = 1
	dataName      = "data"
	logName       = "log"
	// maxRecordSize bounds what Open reads back: a line per MiB written,
	// about 200 bytes, is 20 MiB for a 100 GiB blob.
	maxRecordSize = 64 << 20
	maxLineSize   = 4 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// line is one record line; exactly one group of fields is set.
type line struct {
	// The header.
	Ingest int           `json:"ingest,omitempty"` // recordVersion
	Size   int64         `json:"size,omitempty"`
	Digest digest.Digest `json:"digest,omitempty"`
	Boot   string        `json:"boot,omitempty"` // /proc/sys/kernel/random/boot_id of the writer

	W     *[2]int64 `json:"w,omitempty"`
	Sync  *int      `json:"sync,omitempty"`
	H     *int64    `json:"h,omitempty"`
	State []byte    `json:"state,omitempty"`
}

func encodeLine(l line) []byte {
	b, err := json.Marshal(l)
	if err != nil {
		panic(err) // plain struct: always marshals
	}
	return fmt.Appendf(b, " %08x\n", crc32.Checksum(b, castagnoli))
}

func decodeLine(s []byte) (line, bool) {
	i := bytes.LastIndexByte(s, ' ')
	if i < 0 {
		return line{}, false
	}
	sum, err := strconv.ParseUint(string(s[i+1:]), 16, 32)
	if err != nil || uint32(sum) != crc32.Checksum(s[:i], castagnoli) {
		return line{}, false
	}
	var l line
	dec := json.NewDecoder(bytes.NewReader(s[:i]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return line{}, false
	}
	return l, true
}

// progress is what a record says about its blob.
type progress struct {
	written Ranges // trusted as written
	hashed  int64  // the hash state covers [0, hashed)
	state   []byte // nil: start hashing at 0
}

// readRecord reads the record at path for a blob of size bytes with digest
// want, written in the boot boot. ok is false when there is nothing usable
// (no record, another blob's, a newer format).
func readRecord(path string, size int64, want digest.Digest, boot string) (p progress, ok bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return p, false, nil
	}
	if err != nil {
		return p, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, maxRecordSize))
	sc.Buffer(make([]byte, 0, maxLineSize), maxLineSize)
	if !sc.Scan() {
		return p, false, sc.Err()
	}
	head, valid := decodeLine(sc.Bytes())
	if !valid || head.Ingest != recordVersion || head.Size != size || head.Digest != want {
		return p, false, nil
	}
	sameBoot := boot != "" && head.Boot == boot
	var ws []Range
	synced := 0
	type hashAt struct {
		n     int64
		state []byte
	}
	var hs []hashAt
	for sc.Scan() {
		l, valid := decodeLine(sc.Bytes())
		if !valid {
			break
		}
		switch {
		case l.W != nil:
			off, n := l.W[0], l.W[1]
			if off < 0 || n <= 0 || off > size-n {
				return p, false, nil // not what this package writes
			}
			ws = append(ws, Range{off, off + n})
		case l.Sync != nil:
			synced = max(synced, min(*l.Sync, len(ws)))
		case l.H != nil:
			hs = append(hs, hashAt{*l.H, l.State})
		}
	}
	if !sameBoot {
		ws = ws[:synced]
	}
	for _, r := range ws {
		p.written.Add(r.Off, r.End)
	}
	// The newest hash state over bytes that are all trusted.
	prefix := p.written.Prefix()
	for i := len(hs) - 1; i >= 0; i-- {
		if hs[i].n <= prefix && hs[i].n >= 0 {
			p.hashed, p.state = hs[i].n, hs[i].state
			break
		}
	}
	return p, true, nil
}

// bootID identifies this boot of the kernel ("" when unknown: then only
// synced writes are trusted).
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

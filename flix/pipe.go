package flix

import (
	"io"
	"sync"
)

// pipeChunk and pipeDepth size the read-ahead between decompression and
// extraction: 8 x 256 KiB in flight at most.
const (
	pipeChunk = 256 << 10
	pipeDepth = 8
)

// readAhead reads src in a goroutine, so that downloading, hashing and
// decompressing a layer overlap with writing its files (they are the two
// halves of the work, about equal). Close stops the goroutine; it must be
// called.
type readAhead struct {
	ch   chan []byte
	free chan []byte
	done chan struct{}
	wg   sync.WaitGroup
	err  error // set by the goroutine before ch is closed
	cur  []byte
	buf  []byte // cur's full buffer, returned to free once consumed
	once sync.Once
}

func newReadAhead(src io.Reader) *readAhead {
	r := &readAhead{
		ch:   make(chan []byte, pipeDepth),
		free: make(chan []byte, pipeDepth+1),
		done: make(chan struct{}),
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(r.ch)
		for {
			var b []byte
			select {
			case b = <-r.free:
			default:
				b = make([]byte, pipeChunk)
			}
			n, err := io.ReadFull(src, b)
			if n > 0 {
				select {
				case r.ch <- b[:n]:
				case <-r.done:
					return
				}
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return
			}
			if err != nil {
				r.err = err
				return
			}
		}
	}()
	return r
}

func (r *readAhead) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.buf != nil {
			select {
			case r.free <- r.buf[:cap(r.buf)]:
			default:
			}
			r.buf = nil
		}
		b, ok := <-r.ch
		if !ok {
			if r.err != nil {
				return 0, r.err
			}
			return 0, io.EOF
		}
		r.cur, r.buf = b, b
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// Close stops the reading goroutine and waits for it.
func (r *readAhead) Close() error {
	r.once.Do(func() { close(r.done) })
	r.wg.Wait()
	return nil
}

// Workers: run one validated request against the Backend and queue its reply. READ and
// BLOCK_STATUS live in read.go and status.go.
package server

import (
	"runtime/debug"
)

// zeroBlock is the source for emulated WRITE_ZEROES on backends without a Zeroer.
var zeroBlock = make([]byte, 1<<20)

// run executes j on a worker goroutine. A panic in the backend is logged with its stack and
// closes only this connection.
func (c *conn) run(j job) {
	r := newReply()
	r.buf, r.cost, r.slot = j.buf, j.cost, true
	queued := false
	defer func() {
		if p := recover(); p != nil {
			c.srv.log.Error("nbd: panic handling request; closing connection",
				"remote", c.remote, "cmd", j.req.Type, "panic", p, "stack", string(debug.Stack()))
			c.abort()
			if !queued {
				c.release(r)
			}
		}
		c.requestDone()
	}()
	var errno Errno
	switch j.req.Type {
	case CmdRead:
		errno = c.doRead(r, &j.req)
	case CmdWrite:
		errno = c.doWrite(r, &j.req, *j.buf)
	case CmdFlush:
		errno = c.simple(r, &j.req, "flush failed", c.x.Backend.Flush(c.srv.ctx))
	case CmdTrim:
		errno = c.doTrim(r, &j.req)
	case CmdCache:
		errno = c.doCache(r, &j.req)
	case CmdWriteZeroes:
		errno = c.doWriteZeroes(r, &j.req)
	case CmdBlockStatus:
		errno = c.doBlockStatus(r, &j.req, j.metas)
	}
	c.out <- r
	queued = true
	c.requestFinished(&j, errno)
}

// simple builds the reply of a command without reply payload from its backend error; msg
// is qemu-nbd's text for the failure.
func (c *conn) simple(r *reply, req *Request, msg string, err error) Errno {
	errno := errnoOf(err, false)
	if errno != 0 {
		c.errorReply(r, req, errno, msg)
		return errno
	}
	c.okReply(r, req)
	return 0
}

func (c *conn) doWrite(r *reply, req *Request, p []byte) Errno {
	if len(p) == 0 {
		c.okReply(r, req)
		return 0
	}
	fua := req.Flags&CmdFlagFUA != 0
	x := c.x
	var err error
	if x.DetectZeroes != DetectZeroesOff && x.zeroer != nil && allZero(p) {
		// qemu's detect-zeroes: "unmap" may punch a hole only with discard=unmap.
		flags := ZeroFlags{NoHole: !(x.DetectZeroes == DetectZeroesUnmap && x.Trim), FUA: fua}
		err = x.zeroer.WriteZeroes(c.srv.ctx, req.Offset, req.Length, flags)
	} else {
		err = x.Backend.WriteAt(c.srv.ctx, p, req.Offset, fua)
	}
	// The payload is no longer needed; the reply is small.
	putBuf(r.buf)
	r.buf = nil
	return c.simple(r, req, "writing to file failed", err)
}

func (c *conn) doTrim(r *reply, req *Request) Errno {
	var err error
	// discard=ignore (Trim off), or a backend that cannot discard: a successful no-op.
	if req.Length > 0 && c.x.Trim && c.x.trimmer != nil {
		err = c.x.trimmer.Trim(c.srv.ctx, req.Offset, req.Length, req.Flags&CmdFlagFUA != 0)
	}
	return c.simple(r, req, "discard failed", err)
}

func (c *conn) doCache(r *reply, req *Request) Errno {
	var err error
	if req.Length > 0 && c.x.cacher != nil {
		err = c.x.cacher.Cache(c.srv.ctx, req.Offset, req.Length)
	}
	return c.simple(r, req, "caching data failed", err)
}

func (c *conn) doWriteZeroes(r *reply, req *Request) Errno {
	fast := req.Flags&CmdFlagFastZero != 0
	fua := req.Flags&CmdFlagFUA != 0
	x := c.x
	if req.Length == 0 {
		c.okReply(r, req)
		return 0
	}
	if x.zeroer != nil {
		// qemu-nbd 7.2 lets a write-zeroes without NO_HOLE deallocate whatever --discard says
		// (measured on qcow2 and raw: --discard=ignore only turns TRIM into a no-op).
		flags := ZeroFlags{NoHole: req.Flags&CmdFlagNoHole != 0, FastZero: fast, FUA: fua}
		err := x.zeroer.WriteZeroes(c.srv.ctx, req.Offset, req.Length, flags)
		errno := errnoOf(err, fast)
		if errno != 0 {
			c.errorReply(r, req, errno, "writing to file failed")
			return errno
		}
		c.okReply(r, req)
		return 0
	}
	if fast {
		// Writing zeros by hand is no faster than a WRITE: "the server MUST fail quickly with
		// NBD_ENOTSUP".
		c.errorReply(r, req, ENOTSUP, "fast zeroing not supported")
		return ENOTSUP
	}
	off, end := req.Offset, req.Offset+req.Length
	var err error
	for off < end && err == nil {
		n := min(end-off, uint64(len(zeroBlock)))
		err = x.Backend.WriteAt(c.srv.ctx, zeroBlock[:n], off, fua)
		off += n
	}
	return c.simple(r, req, "writing to file failed", err)
}

// allZero reports whether p holds only zero bytes.
func allZero(p []byte) bool {
	for len(p) >= 8 {
		if be.Uint64(p) != 0 {
			return false
		}
		p = p[8:]
	}
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// Result labels: the bounded set of values the result label of qnbd_nbd_requests_total takes.
package metrics

import "github.com/qnbd/qnbd/server"

// result indexes the result label of a finished NBD request.
type result uint8

// The results. Every NBD errno defined by the protocol has its own value; anything else a
// server might send is counted as "other", so the label set stays bounded.
const (
	resultOK result = iota
	resultEPERM
	resultEIO
	resultENOMEM
	resultEINVAL
	resultENOSPC
	resultEOVERFLOW
	resultENOTSUP
	resultESHUTDOWN
	resultOther
	numResults
)

var resultNames = [numResults]string{
	"ok", "EPERM", "EIO", "ENOMEM", "EINVAL", "ENOSPC", "EOVERFLOW", "ENOTSUP", "ESHUTDOWN", "other",
}

func (r result) String() string {
	if r < numResults {
		return resultNames[r]
	}
	return "unknown"
}

// resultOf classifies an NBD errno as reported to ExportHooks.RequestDone (0 = success). The
// values are server's wire constants (server/proto.go); the switch compiles to a jump table,
// with no map lookup on the hot path.
func resultOf(errno uint32) result {
	switch server.Errno(errno) {
	case 0:
		return resultOK
	case server.EPERM:
		return resultEPERM
	case server.EIO:
		return resultEIO
	case server.ENOMEM:
		return resultENOMEM
	case server.EINVAL:
		return resultEINVAL
	case server.ENOSPC:
		return resultENOSPC
	case server.EOVERFLOW:
		return resultEOVERFLOW
	case server.ENOTSUP:
		return resultENOTSUP
	case server.ESHUTDOWN:
		return resultESHUTDOWN
	}
	return resultOther
}

// Result labels: the bounded set of values the result label of qnbd_nbd_requests_total takes.
package metrics

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

// NBD error values, NBD proto.md "Error values": "The following error values are defined:
// NBD_EPERM (1) ... NBD_EIO (5) ... NBD_ENOMEM (12) ... NBD_EINVAL (22) ... NBD_ENOSPC (28)
// ... NBD_EOVERFLOW (75) ... NBD_ENOTSUP (95) ... NBD_ESHUTDOWN (108)". They are repeated
// here (rather than taken from server/) so that the mapping to label values is a switch the
// compiler turns into a jump table, with no map lookup on the hot path.
const (
	nbdEPERM     = 1
	nbdEIO       = 5
	nbdENOMEM    = 12
	nbdEINVAL    = 22
	nbdENOSPC    = 28
	nbdEOVERFLOW = 75
	nbdENOTSUP   = 95
	nbdESHUTDOWN = 108
)

// resultOf classifies an NBD errno as reported to ExportHooks.RequestDone (0 = success).
func resultOf(errno uint32) result {
	switch errno {
	case 0:
		return resultOK
	case nbdEPERM:
		return resultEPERM
	case nbdEIO:
		return resultEIO
	case nbdENOMEM:
		return resultENOMEM
	case nbdEINVAL:
		return resultEINVAL
	case nbdENOSPC:
		return resultENOSPC
	case nbdEOVERFLOW:
		return resultEOVERFLOW
	case nbdENOTSUP:
		return resultENOTSUP
	case nbdESHUTDOWN:
		return resultESHUTDOWN
	}
	return resultOther
}

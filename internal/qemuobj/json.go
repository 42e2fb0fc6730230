// The JSON form of --object: one JSON object, values as decoded.
package qemuobj

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

func parseJSON(s string) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, errorf("JSON parse error, premature EOI")
		}
		return nil, errorf("JSON parse error, %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errorf("JSON parse error, expecting end of input")
	}
	return m, nil
}

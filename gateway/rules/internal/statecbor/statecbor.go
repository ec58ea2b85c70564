package statecbor

import (
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"
)

var modes = sync.OnceValues(func() (struct {
	enc cbor.EncMode
	dec cbor.DecMode
}, error) {
	var m struct {
		enc cbor.EncMode
		dec cbor.DecMode
	}
	var err error
	if m.enc, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		return m, err
	}
	m.dec, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   8,
		MaxArrayElements:  1 << 24,
		MaxMapPairs:       1 << 24,
		UTF8:              cbor.UTF8RejectInvalid,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	return m, err
})

// Marshal encodes v deterministically.
func Marshal(v any) ([]byte, error) {
	m, err := modes()
	if err != nil {
		return nil, err
	}
	return m.enc.Marshal(v)
}

// Unmarshal decodes b into v, refusing duplicate map keys, indefinite
// lengths, tags, invalid UTF-8, unknown struct fields and nesting deeper
// than 8 levels.
func Unmarshal(b []byte, v any) error {
	m, err := modes()
	if err != nil {
		return err
	}
	return m.dec.Unmarshal(b, v)
}

// Time is a time in stage state: Unix seconds and nanoseconds, which
// (unlike UnixNano) cover every time.Time, the zero one included.
type Time struct {
	_    struct{} `cbor:",toarray"`
	Sec  int64
	Nsec int64
}

// TimeOf returns t as a Time.
func TimeOf(t time.Time) Time {
	return Time{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// Time returns the time s holds, in UTC; false if s is not a valid time
// (nanoseconds out of range: damaged state).
func (s Time) Time() (time.Time, bool) {
	if s.Nsec < 0 || s.Nsec >= 1e9 {
		return time.Time{}, false
	}
	return time.Unix(s.Sec, s.Nsec).UTC(), true
}

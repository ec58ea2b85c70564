package payload

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"reflect"
	"strings"
	"sync"

	"github.com/fxamacker/cbor/v2"
)

// cborModes returns the CBOR decoding modes: plain CBOR decodes maps to
// map[string]any (any other key type fails in the decoder), SenML to
// map[any]any for its integer labels. Both enforce the limits in the
// decoder itself, which checks declared lengths against the caps and the
// remaining input before it allocates anything for them.
var cborModes = sync.OnceValues(func() ([2]cbor.DecMode, error) {
	opts := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  maxDepth,
		MaxArrayElements: maxElems,
		MaxMapPairs:      maxElems,
		IndefLength:      cbor.IndefLengthAllowed,
		TagsMd:           cbor.TagsForbidden,
		IntDec:           cbor.IntDecConvertNone,
		DefaultMapType:   reflect.TypeFor[map[string]any](),
		UTF8:             cbor.UTF8RejectInvalid,
		NaN:              cbor.NaNDecodeForbidden,
		Inf:              cbor.InfDecodeForbidden,
		BignumTag:        cbor.BignumTagForbidden,
		MapKeyByteString: cbor.MapKeyByteStringForbidden,
	}
	var modes [2]cbor.DecMode
	var err error
	if modes[0], err = opts.DecMode(); err != nil {
		return modes, err
	}
	// RFC 8428 section 6: a SenML pack that is not a stream uses definite
	// lengths, and its strings always do.
	opts.DefaultMapType = nil
	opts.IndefLength = cbor.IndefLengthForbidden
	modes[1], err = opts.DecMode()
	return modes, err
})

// The indexes of cborModes.
const (
	cborPlain = 0
	cborSenML = 1
)

// decodeCBORWith decodes payload with mode i of cborModes.
func decodeCBORWith(i int, payload []byte) (any, error) {
	modes, err := cborModes()
	if err != nil {
		return nil, fmt.Errorf("rules: cbor decoder setup: %w", err)
	}
	var v any
	if err := modes[i].Unmarshal(payload, &v); err != nil {
		return nil, cborError(err, i == cborSenML)
	}
	return v, nil
}

// cborError turns a decoder error into an ErrMalformed with a short,
// deterministic reason.
func cborError(err error, senml bool) error {
	var (
		nest   *cbor.MaxNestedLevelError
		arr    *cbor.MaxArrayElementsError
		pairs  *cbor.MaxMapPairsError
		dup    *cbor.DupMapKeyError
		tags   *cbor.TagsMdError
		extra  *cbor.ExtraneousDataError
		indef  *cbor.IndefiniteLengthError
		syntax *cbor.SyntaxError
		unacc  *cbor.UnacceptableDataItemError
		typ    *cbor.UnmarshalTypeError
		key    *cbor.InvalidMapKeyTypeError
	)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errorf("cbor: truncated data")
	case errors.As(err, &nest):
		return errorf("cbor: nesting deeper than %d levels", maxDepth)
	case errors.As(err, &arr):
		return errorf("cbor: array has more than %d elements", maxElems)
	case errors.As(err, &pairs):
		return errorf("cbor: map has more than %d pairs", maxElems)
	case errors.As(err, &dup):
		return errorf("cbor: duplicate map key")
	case errors.As(err, &tags):
		return errorf("cbor: tags are not accepted")
	case errors.As(err, &extra):
		return errorf("cbor: trailing data after the CBOR item")
	case errors.As(err, &indef):
		return errorf("cbor: indefinite-length item (SenML must use definite lengths)")
	case errors.As(err, &unacc):
		return errorf("cbor: %s", unacc.Message) // NaN, Inf
	case errors.As(err, &typ), errors.As(err, &key):
		if senml {
			return errorf("cbor: map key is not an integer label or a text string")
		}
		return errorf("cbor: map key is not a text string")
	case errors.As(err, &syntax):
		return errorf("cbor: %s", strings.TrimPrefix(syntax.Error(), "cbor: "))
	}
	return errorf("cbor: %s", strings.TrimPrefix(err.Error(), "cbor: "))
}

// decodeCBOR decodes a plain CBOR item into the Fields model.
func decodeCBOR(payload []byte) (any, error) {
	if len(payload) == 0 {
		return nil, errorf("cbor: empty payload")
	}
	v, err := decodeCBORWith(cborPlain, payload)
	if err != nil {
		return nil, err
	}
	return cborNormalize(v)
}

// cborNormalize converts a decoded CBOR value to the Fields model in
// place: integers to float64, byte strings to base64url.
func cborNormalize(v any) (any, error) {
	switch x := v.(type) {
	case nil, bool, string:
		return x, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) { // the decoder rejects them; be sure
			return nil, errorf("cbor: NaN or infinite number")
		}
		return x, nil
	case uint64:
		if x > maxInt {
			return nil, errorf("cbor: integer %d is beyond ±2^53, where float64 loses precision", x)
		}
		return float64(x), nil
	case int64:
		if x < -maxInt || x > maxInt {
			return nil, errorf("cbor: integer %d is beyond ±2^53, where float64 loses precision", x)
		}
		return float64(x), nil
	case big.Int, *big.Int:
		return nil, errorf("cbor: integer is beyond ±2^53, where float64 loses precision")
	case []byte:
		return base64.RawURLEncoding.EncodeToString(x), nil
	case []any:
		for i, e := range x {
			n, err := cborNormalize(e)
			if err != nil {
				return nil, err
			}
			x[i] = n
		}
		return x, nil
	case map[string]any:
		// Map order is random: report the error of the smallest failing
		// key so the reason is the same on every replay. Each value is
		// normalized once, whatever fails: re-running a failing subtree
		// to find that key would double the work at every level of
		// nesting, 2^32 times a leaf for 32 nested maps.
		var errKey string
		var firstErr error
		for k, e := range x {
			n, err := cborNormalize(e)
			if err != nil {
				if firstErr == nil || k < errKey {
					errKey, firstErr = k, err
				}
				continue
			}
			x[k] = n
		}
		if firstErr != nil {
			return nil, firstErr
		}
		return x, nil
	case cbor.SimpleValue:
		return nil, errorf("cbor: unassigned simple value %d", uint8(x))
	}
	return nil, errorf("cbor: unsupported item of Go type %T", v)
}

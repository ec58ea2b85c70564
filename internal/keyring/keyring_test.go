package keyring

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// testKey is 0x00, 0x01, ... 0x1f: a fixed key for reproducible vectors.
func testKey() []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

func keyLine(k []byte) string { return base64.StdEncoding.EncodeToString(k) }

// writeFile writes a key file with the given mode (set explicitly: the
// umask must not decide what the test checks).
func writeFile(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "buffer.key")
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustLoad(t testing.TB, path string) *Ring {
	t.Helper()
	r, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return r
}

// repeatReader returns b forever: a fixed nonce source.
type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// TestGolden pins the sealed format: a fixed key, nonce, plaintext and aad
// must give exactly these bytes, forever (buffers on disk depend on it).
// The parts are also checked against the format's definition, computed
// here independently of Seal.
func TestGolden(t *testing.T) {
	r := mustLoad(t, writeFile(t, keyLine(testKey())+"\n", 0o600))
	r.rand = repeatReader(0x42)
	const (
		wantID     = "e2baa034"
		wantSealed = "fee2baa034424242424242424242424242424242424242424242424242" +
			"96f08d2ad2065615248a3da18b2c8e5f5b31ed1dda4f383d71227bdb"
	)
	got := r.Seal(nil, []byte("hello, ferry"), []byte("raw"))
	if r.ActiveID() != wantID {
		t.Errorf("key id = %s, want %s", r.ActiveID(), wantID)
	}
	if hex.EncodeToString(got) != wantSealed {
		t.Errorf("sealed =\n%x\nwant\n%s", got, wantSealed)
	}

	// The same bytes from the definition.
	sum := sha256.Sum256(append([]byte("ferry-keyring-v1"), testKey()...))
	nonce := bytes.Repeat([]byte{0x42}, 24)
	aead, err := chacha20poly1305.NewX(testKey())
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{0xFE}, sum[:4]...)
	want = append(want, nonce...)
	want = aead.Seal(want, nonce, []byte("hello, ferry"), []byte("raw"))
	if !bytes.Equal(got, want) {
		t.Errorf("sealed =\n%x\nthe format's definition gives\n%x", got, want)
	}
	if hex.EncodeToString(sum[:4]) != wantID {
		t.Errorf("id from the definition = %x, want %s", sum[:4], wantID)
	}
	if len(got) != len("hello, ferry")+Overhead {
		t.Errorf("sealed is %d bytes, want plaintext+%d", len(got), Overhead)
	}
	if id, ok := KeyID(got); !ok || id != wantID {
		t.Errorf("KeyID = %q, %v", id, ok)
	}
}

func TestRoundTrip(t *testing.T) {
	r := mustLoad(t, writeFile(t, keyLine(testKey())+"\n", 0o600))
	for _, size := range []int{0, 1, 100, 4096, 70000} {
		pt := bytes.Repeat([]byte{'x'}, size)
		prefix := []byte("prefix")
		sealed := r.Seal(append([]byte(nil), prefix...), pt, []byte("raw"))
		if !bytes.HasPrefix(sealed, prefix) {
			t.Fatalf("size %d: Seal did not append to dst", size)
		}
		sealed = sealed[len(prefix):]
		if !IsSealed(sealed) || len(sealed) != size+Overhead {
			t.Fatalf("size %d: sealed is %d bytes, IsSealed %v", size, len(sealed), IsSealed(sealed))
		}
		got, err := r.Open([]byte("p:"), sealed, []byte("raw"))
		if err != nil {
			t.Fatalf("size %d: Open: %v", size, err)
		}
		if !bytes.Equal(got, append([]byte("p:"), pt...)) {
			t.Fatalf("size %d: Open returned %d bytes, want the plaintext after dst", size, len(got))
		}
	}
	// Two seals of the same plaintext differ: fresh nonces.
	a, b := r.Seal(nil, []byte("same"), nil), r.Seal(nil, []byte("same"), nil)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same plaintext are equal: nonce reused")
	}
}

// TestIsSealed: plaintext that ferry stores in the clear (CBOR events,
// CBOR state, decimal counters) must never look sealed.
func TestIsSealed(t *testing.T) {
	for _, tt := range []struct {
		b    []byte
		want bool
	}{
		{nil, false},
		{[]byte{0x88, 0x50}, false}, // CBOR array of 8: an event
		{[]byte{0x83}, false},       // CBOR array of 3: pipeline state
		{[]byte("12345"), false},    // a driver counter
		{[]byte{0xFE}, true},
	} {
		if got := IsSealed(tt.b); got != tt.want {
			t.Errorf("IsSealed(%x) = %v, want %v", tt.b, got, tt.want)
		}
	}
	for b := 0x80; b <= 0x9f; b++ { // every CBOR array head
		if IsSealed([]byte{byte(b)}) {
			t.Errorf("IsSealed(%#x) = true: a CBOR array would be taken for sealed data", b)
		}
	}
}

// TestTamper flips each byte of a sealed value in turn: every change must
// be detected. A changed key id names a key that is not in the ring.
func TestTamper(t *testing.T) {
	r := mustLoad(t, writeFile(t, keyLine(testKey())+"\n", 0o600))
	sealed := r.Seal(nil, []byte("reading=21.5"), []byte("raw"))
	for i := range sealed {
		bad := append([]byte(nil), sealed...)
		bad[i] ^= 0x01
		_, err := r.Open(nil, bad, []byte("raw"))
		want := ErrDecrypt
		if i >= 1 && i < 5 {
			want = ErrUnknownKey
		}
		if !errors.Is(err, want) {
			t.Errorf("byte %d flipped: err = %v, want %v", i, err, want)
		}
	}
	for n := range Overhead {
		if _, err := r.Open(nil, sealed[:n], []byte("raw")); !errors.Is(err, ErrDecrypt) {
			t.Errorf("truncated to %d bytes: err = %v, want ErrDecrypt", n, err)
		}
	}
	if _, err := r.Open(nil, sealed[:len(sealed)-1], []byte("raw")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("tag truncated: err = %v, want ErrDecrypt", err)
	}
}

func TestWrongAAD(t *testing.T) {
	r := mustLoad(t, writeFile(t, keyLine(testKey())+"\n", 0o600))
	sealed := r.Seal(nil, []byte("reading=21.5"), []byte("raw"))
	for _, aad := range []string{"", "ra", "raw2", "state/raw"} {
		_, err := r.Open(nil, sealed, []byte(aad))
		if !errors.Is(err, ErrDecrypt) {
			t.Errorf("aad %q: err = %v, want ErrDecrypt", aad, err)
		}
	}
}

func TestUnknownKey(t *testing.T) {
	a := mustLoad(t, writeFile(t, keyLine(testKey())+"\n", 0o600))
	other := testKey()
	other[0] = 0xff
	bPath := writeFile(t, keyLine(other)+"\n", 0o600)
	b := mustLoad(t, bPath)
	_, err := b.Open(nil, a.Seal(nil, []byte("x"), nil), nil)
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("err = %v, want ErrUnknownKey", err)
	}
	if msg := err.Error(); !strings.Contains(msg, a.ActiveID()) || !strings.Contains(msg, bPath) {
		t.Errorf("message %q does not name the key id %s and the file %s", msg, a.ActiveID(), bPath)
	}
}

func TestLoadErrors(t *testing.T) {
	good := keyLine(testKey())
	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	for _, tt := range []struct {
		name    string
		content string
		mode    os.FileMode
		want    error
		msg     []string // substrings of the message, besides the path
	}{
		{"mode 0644", good + "\n", 0o644, ErrKeyFilePerms, []string{"mode 0644", "chmod 600"}},
		{"mode 0640", good + "\n", 0o640, ErrKeyFilePerms, []string{"mode 0640", "group or others"}},
		{"mode 0604", good + "\n", 0o604, ErrKeyFilePerms, []string{"mode 0604"}},
		{"mode 0620 (group may write)", good + "\n", 0o620, ErrKeyFilePerms, []string{"mode 0620"}},
		{"empty file", "", 0o600, ErrNoKeys, []string{"no keys", "ferry key new"}},
		{"comments only", "# nothing yet\n\n", 0o600, ErrNoKeys, []string{"no keys"}},
		{"garbage line", "# keys\n" + good + "\nnot a key!\n", 0o600, ErrBadKeyFile, []string{":3:", "base64"}},
		{"short key", "\n" + short + "\n", 0o600, ErrBadKeyFile, []string{":2:", "16 bytes, want 32"}},
		{"trailing comment", good + " # mine\n", 0o600, ErrBadKeyFile, []string{":1:"}},
		{"duplicate key", good + "\n" + good + "\n", 0o600, ErrBadKeyFile, []string{":2:", "line 1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.content, tt.mode)
			r, err := Load(path)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Load = %v, %v; want %v", r, err, tt.want)
			}
			for _, s := range append(tt.msg, path) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("message %q does not contain %q", err, s)
				}
			}
			if strings.Contains(err.Error(), good) {
				t.Errorf("message %q contains the key", err)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "nope.key"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("err = %v, want ErrNotExist", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		_, err := Load(t.TempDir())
		if !errors.Is(err, ErrBadKeyFile) {
			t.Fatalf("err = %v, want ErrBadKeyFile", err)
		}
	})
	t.Run("other owner", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to give the file to another user")
		}
		path := writeFile(t, good+"\n", 0o600)
		if err := os.Chown(path, 4242, 4242); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if !errors.Is(err, ErrKeyFilePerms) || !strings.Contains(err.Error(), "owned by uid 4242") {
			t.Fatalf("err = %v, want ErrKeyFilePerms naming uid 4242", err)
		}
	})
}

// TestLoadFormat: comments, blank lines, CRLF and surrounding spaces are
// accepted, and the last key is the active one.
func TestLoadFormat(t *testing.T) {
	k2 := testKey()
	k2[31] = 0xee
	path := writeFile(t, "# ferry keys\r\n\r\n  "+keyLine(testKey())+"  \r\n# rotated\n"+keyLine(k2), 0o600)
	r := mustLoad(t, path)
	ids := r.IDs()
	if len(ids) != 2 || ids[0] != "e2baa034" || r.ActiveID() != ids[1] || ids[1] == ids[0] {
		t.Fatalf("IDs = %v, active %s", ids, r.ActiveID())
	}
	if !r.Has(ids[0]) || r.Has("00000000") || r.Path() != path {
		t.Fatalf("Has/Path wrong: %v %v %q", r.Has(ids[0]), r.Has("00000000"), r.Path())
	}
	ids[0] = "changed" // IDs returns a copy: the ring is immutable
	if r.IDs()[0] != "e2baa034" {
		t.Fatal("IDs exposes the ring's state")
	}
}

func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "buffer.key")
	id1, err := Generate(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
	r1 := mustLoad(t, path)
	if r1.ActiveID() != id1 || len(r1.IDs()) != 1 || len(id1) != 8 {
		t.Fatalf("after one Generate: id %q, ring %v", id1, r1.IDs())
	}
	sealed1 := r1.Seal(nil, []byte("old"), []byte("raw"))

	id2, err := Generate(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	r2 := mustLoad(t, path)
	if ids := r2.IDs(); len(ids) != 2 || ids[0] != id1 || ids[1] != id2 || r2.ActiveID() != id2 {
		t.Fatalf("after rotation: ids %v active %s; want [%s %s] active %s", ids, r2.ActiveID(), id1, id2, id2)
	}
	if got, err := r2.Open(nil, sealed1, []byte("raw")); err != nil || string(got) != "old" {
		t.Fatalf("the rotated ring opens old data: %q, %v", got, err)
	}
	sealed2 := r2.Seal(nil, []byte("new"), []byte("raw"))
	if id, _ := KeyID(sealed2); id != id2 {
		t.Fatalf("new data sealed with %s, want the new key %s", id, id2)
	}
	if _, err := r1.Open(nil, sealed2, []byte("raw")); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("the old ring opening new data: %v, want ErrUnknownKey", err)
	}
	if r1.ActiveID() != id1 {
		t.Fatal("Generate changed a loaded ring")
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file after rotation: %v, %v; want mode 0600", fi, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestGenerateDeterministic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.key")
	id, err := Generate(path, bytes.NewReader(testKey()))
	if err != nil || id != "e2baa034" {
		t.Fatalf("Generate = %q, %v; want the id of the key read from rand", id, err)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "\n"+keyLine(testKey())+"\n") {
		t.Fatalf("key file does not hold the key on a line of its own:\n%s", data)
	}
}

func TestGenerateErrors(t *testing.T) {
	t.Run("refuses a file with loose perms", func(t *testing.T) {
		path := writeFile(t, keyLine(testKey())+"\n", 0o644)
		if _, err := Generate(path, nil); !errors.Is(err, ErrKeyFilePerms) {
			t.Fatalf("err = %v, want ErrKeyFilePerms", err)
		}
	})
	t.Run("refuses a file that does not parse", func(t *testing.T) {
		path := writeFile(t, "garbage\n", 0o600)
		if _, err := Generate(path, nil); !errors.Is(err, ErrBadKeyFile) {
			t.Fatalf("err = %v, want ErrBadKeyFile", err)
		}
		if data, _ := os.ReadFile(path); string(data) != "garbage\n" {
			t.Fatalf("file changed: %q", data)
		}
	})
	t.Run("appends to a file without keys or final newline", func(t *testing.T) {
		path := writeFile(t, "# mine", 0o600)
		id, err := Generate(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r := mustLoad(t, path); r.ActiveID() != id {
			t.Fatalf("active %s, want %s", r.ActiveID(), id)
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		_, err := Generate(filepath.Join(t.TempDir(), "no", "such", "buffer.key"), nil)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("err = %v, want ErrNotExist", err)
		}
	})
	t.Run("short random source", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "buffer.key")
		if _, err := Generate(path, bytes.NewReader(make([]byte, 5))); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("err = %v, want ErrUnexpectedEOF", err)
		}
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("a file was written after the failure: %v", err)
		}
	})
}

// TestConcurrent seals and opens from many goroutines on one ring (run
// with -race).
func TestConcurrent(t *testing.T) {
	r := mustLoad(t, writeFile(t, keyLine(testKey())+"\n", 0o600))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pt := []byte{byte(g)}
			for range 200 {
				got, err := r.Open(nil, r.Seal(nil, pt, []byte("s")), []byte("s"))
				if err != nil || !bytes.Equal(got, pt) {
					t.Errorf("goroutine %d: %q, %v", g, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkSeal and BenchmarkOpen measure a 100-byte event into a reused
// buffer: the only allocations are the AEAD's own.
func BenchmarkSeal(b *testing.B) {
	r := mustLoad(b, writeFileB(b, keyLine(testKey())+"\n"))
	pt, aad := make([]byte, 100), []byte("telemetry")
	buf := make([]byte, 0, len(pt)+Overhead)
	b.ReportAllocs()
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		buf = r.Seal(buf[:0], pt, aad)
	}
}

func BenchmarkOpen(b *testing.B) {
	r := mustLoad(b, writeFileB(b, keyLine(testKey())+"\n"))
	pt, aad := make([]byte, 100), []byte("telemetry")
	sealed := r.Seal(nil, pt, aad)
	buf := make([]byte, 0, len(pt))
	b.ReportAllocs()
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		var err error
		if buf, err = r.Open(buf[:0], sealed, aad); err != nil {
			b.Fatal(err)
		}
	}
}

func writeFileB(b *testing.B, content string) string {
	path := filepath.Join(b.TempDir(), "buffer.key")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

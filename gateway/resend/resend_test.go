package resend

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/ferrygw/ferry/uplink"
)

// fwd is a Forwarder that records its calls and answers with first and err.
type fwd struct {
	calls []string
	first uint64
	err   error
}

func (f *fwd) Resend(stream string, from, to uint64) (uint64, error) {
	f.calls = append(f.calls, fmt.Sprintf("%s %d-%d", stream, from, to))
	return f.first, f.err
}

// TestHandler: each refusal names its reason, an accepted request is
// handed to the forwarder, the reply goes to the response topic else to
// reply_to, and an undecodable request gets no reply.
func TestHandler(t *testing.T) {
	const req = `{"id":"r1","gateway":"gw","stream":"t","epoch":"e1","from_seq":10,"to_seq":20,"reply_to":"v/reply"}`
	cases := []struct {
		name      string
		payload   string
		response  string
		epoch     string
		noFwd     bool
		first     uint64
		err       error
		wantTopic string
		wantReply string // status/error/first_seq; "" no reply
		wantCall  bool
	}{
		{"served", req, "", "e1", false, 5, nil, "v/reply", "ok//0", true},
		{"served from later", req, "resp/1", "e1", false, 12, nil, "resp/1", "ok//12", true},
		{"other gateway", `{"gateway":"gw2","stream":"t","epoch":"e1","from_seq":1,"to_seq":2,"reply_to":"v"}`, "", "e1", false, 0, nil, "v", "refused/gateway/0", false},
		{"other epoch", req, "", "e2", false, 0, nil, "v/reply", "refused/epoch/0", false},
		{"uplink off", req, "", "e1", true, 0, nil, "v/reply", "refused/stream/0", false},
		{"stream", req, "", "e1", false, 0, uplink.ErrResendStream, "v/reply", "refused/stream/0", true},
		{"gone", req, "", "e1", false, 400, uplink.ErrResendGone, "v/reply", "refused/retained/400", true},
		{"range", req, "", "e1", false, 1, uplink.ErrResendRange, "v/reply", "refused/range/0", true},
		{"busy", req, "", "e1", false, 1, uplink.ErrResendBusy, "v/reply", "refused/busy/0", true},
		{"queue", req, "", "e1", false, 0, uplink.ErrQueue, "v/reply", "refused/queue/0", true},
		{"undecodable", `{"gateway":`, "resp/1", "e1", false, 0, nil, "", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fwd{first: tc.first, err: tc.err}
			h := &Handler{GatewayID: "gw", Epoch: func() string { return tc.epoch }, Fwd: f,
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			if tc.noFwd {
				h.Fwd = nil
			}
			topic, b, refused := h.Resend([]byte(tc.payload), tc.response)
			if topic != tc.wantTopic {
				t.Errorf("reply topic %q, want %q", topic, tc.wantTopic)
			}
			if (len(f.calls) == 1) != tc.wantCall || tc.wantCall && f.calls[0] != "t 10-20" {
				t.Errorf("forwarder calls %q", f.calls)
			}
			if tc.wantReply == "" {
				if b != nil || !refused {
					t.Errorf("reply %q refused %v, want none", b, refused)
				}
				return
			}
			var r uplink.ResendReply
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprintf("%s/%s/%d", r.Status, r.Error, r.FirstSeq); got != tc.wantReply || refused != (r.Status == uplink.ReplyRefused) {
				t.Errorf("reply %s (refused %v), want %s", got, refused, tc.wantReply)
			}
			var q uplink.ResendRequest
			_ = json.Unmarshal([]byte(tc.payload), &q)
			if r.ID != q.ID || r.Gateway != q.Gateway || r.Stream != q.Stream || r.Epoch != q.Epoch || r.FromSeq != q.FromSeq || r.ToSeq != q.ToSeq {
				t.Errorf("reply %+v does not echo %+v", r, q)
			}
		})
	}
}

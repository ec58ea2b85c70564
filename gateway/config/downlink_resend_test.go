package config

import "testing"

// TestResendOn: resend requests are served whenever the downlink session
// runs unless downlink.resend is false; resend: true runs the session
// for it alone; the uplink must be on.
func TestResendOn(t *testing.T) {
	yes, no := true, false
	cases := []struct {
		name          string
		uplink        bool
		presence      *bool
		resend        *bool
		session, want bool
	}{
		{"no session", true, nil, nil, false, false},
		{"session for presence", true, &yes, nil, true, true},
		{"turned off", true, &yes, &no, true, false},
		{"session for resend alone", true, nil, &yes, true, true},
		{"uplink off", false, nil, &yes, false, false},
	}
	for _, tc := range cases {
		c := &Config{GatewayID: "gw1"}
		c.Uplink.Enabled = &tc.uplink
		c.Downlink.Presence.Enabled = tc.presence
		c.Downlink.Resend = tc.resend
		if c.DownlinkSession() != tc.session || c.ResendOn() != tc.want {
			t.Errorf("%s: session %v resend %v, want %v %v", tc.name, c.DownlinkSession(), c.ResendOn(), tc.session, tc.want)
		}
	}
	if got := (&Config{GatewayID: "gw1"}).ResendTopic(); got != "gw1/cmd/ferry/resend" {
		t.Errorf("topic %q", got)
	}
}

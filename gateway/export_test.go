package gateway

import "github.com/ferrygw/ferry/gateway/config"

// LoadClientTLS exposes tlsConfig to the external tests.
var LoadClientTLS = func(ca, cert, key string) (any, error) {
	return tlsConfig(&config.TLS{CAFile: ca, CertFile: cert, KeyFile: key})
}

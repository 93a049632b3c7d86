package sidecar

import (
	"fmt"
	"net/url"
	"os"
	"strings"
)

// bundleService renders keygate's bundle download options onto the OPA service the bundle downloads from
// (services.keygate, plugins/rest.Config), over what an OPA-format configuration already says there: the
// server's URL, the CA its certificate is checked against (tls.ca_cert), and the credentials: a client
// certificate (credentials.client_tls {cert, private_key}) and/or a bearer token (credentials.bearer, token
// or token_path). OPA takes one credentials method per service: with both a client certificate and a token,
// the token is sent as a static Authorization header (a token file is then read once, here). Without a
// token or client certificate set here, the configuration's own credentials stand.
func bundleService(svc map[string]any, u *url.URL, b BundleConfig) error {
	svc["url"] = u.Scheme + "://" + u.Host
	if b.CACert != "" {
		ensure(svc, "tls")["ca_cert"] = b.CACert
	}
	bearer := map[string]any{}
	switch {
	case b.Token != "":
		bearer["token"] = b.Token
	case b.TokenFile != "":
		bearer["token_path"] = b.TokenFile
	}
	switch {
	case b.ClientCert != "":
		svc["credentials"] = map[string]any{"client_tls": map[string]any{"cert": b.ClientCert, "private_key": b.ClientKey}}
		if len(bearer) > 0 {
			tok := b.Token
			if b.TokenFile != "" {
				raw, err := os.ReadFile(b.TokenFile)
				if err != nil {
					return fmt.Errorf("bundle.token_file: %w", err)
				}
				tok = strings.TrimSpace(string(raw))
			}
			ensure(svc, "headers")["Authorization"] = "Bearer " + tok
		}
	case len(bearer) > 0:
		svc["credentials"] = map[string]any{"bearer": bearer}
	}
	return nil
}

// AOG forwarded-identity signer for nginx's njs (Debian: libnginx-mod-http-js, njs 0.7.9+).
// Produces X-AOG-Signature for scheme aog-forward-v1 (the gate's docs/protocol.md, section 1.1):
//   v1 = HMAC-SHA256(secret, "aog-forward-v1" LF t LF rid LF METHOD LF request-target LF
//                            X-AOG-Client-Verify LF X-AOG-Client-Cert)
// with the header values exactly as nginx sends them ($ssl_client_verify, $ssl_client_escaped_cert),
// METHOD = $request_method and request-target = $request_uri. Both are the MAIN request's, also in
// an auth_request subrequest (where r.method is GET and the URI is the internal location's): the
// gate's GET /auth checks the signature against X-Original-Method and X-Original-URI, so a signature
// made for one path cannot authorize another. For an ordinary proxied request they are its own
// method and target, as before. The secret is the first line of the file named by
// $aog_secret_file, read on each request (njs keeps no state between requests, and a file read
// from the page cache costs microseconds), so a new secret takes effect without reloading nginx.
// Uses only the synchronous crypto.createHmac of njs 0.7.
var fs = require('fs');
var crypto = require('crypto');

function secret(r) {
    var text = fs.readFileSync(r.variables.aog_secret_file, 'utf8');
    var first = text.split('\n')[0].trim();
    if (first.length < 16) {
        throw new Error('aog: the secret in ' + r.variables.aog_secret_file + ' is missing or shorter than 16 characters');
    }
    return first;
}

function sign(r) {
    var t = Math.floor(Date.now() / 1000);
    var rid = r.variables.request_id;
    // $request_method, not r.method: see the header comment (auth_request subrequests).
    var msg = ['aog-forward-v1', String(t), rid, r.variables.request_method, r.variables.request_uri,
        r.variables.ssl_client_verify || '', r.variables.ssl_client_escaped_cert || ''].join('\n');
    var v1 = crypto.createHmac('sha256', secret(r)).update(msg).digest('hex');
    return 't=' + t + ',rid=' + rid + ',v1=' + v1;
}

export default { sign: sign };

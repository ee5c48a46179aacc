/* TLS engine over OpenSSL memory BIOs; see net/tls.h. */
#include "net/tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/buf.h"
#include "kv/errors.h"

struct tls_ctx {
	SSL_CTX *ssl_ctx;
	unsigned refs; /* the owner + one per engine */
	bool server;
	unsigned char alpn[128]; /* wire format: len-prefixed names */
	size_t alpn_len;
};

struct tls_engine {
	SSL *ssl;
	struct tls_ctx *ctx; /* referenced: ALPN selection reads it */
	bool server;
	bool done;      /* handshake complete */
	bool failed;    /* sticky error */
	bool shut;      /* close_notify queued */
	struct kv_buf early; /* plaintext written before the handshake ended */
	char alpn[32];
	char peer_cn[128];
	char errmsg[256];
};

/* Appends OpenSSL's error queue to buf (clearing it). */
static void ssl_errors(char *buf, size_t len)
{
	unsigned long e;
	size_t used = strlen(buf);
	while ((e = ERR_get_error()) != 0) {
		char one[200];
		ERR_error_string_n(e, one, sizeof(one));
		/* keep the reason part only ("error:0A000086:SSL
		 * routines::certificate verify failed" -> last field) */
		const char *r = strrchr(one, ':');
		r = r ? r + 1 : one;
		if (used + 3 < len) {
			int n = snprintf(buf + used, len - used, "%s%s",
					 used ? ": " : "", r);
			if (n > 0)
				used += (size_t)n < len - used ? (size_t)n
							      : len - used - 1;
		}
	}
}

static int parse_alpn(const char *list, unsigned char *out, size_t cap,
		      size_t *outlen)
{
	size_t n = 0;
	const char *p = list ? list : "h2,http/1.1";
	while (*p) {
		const char *end = strchr(p, ',');
		size_t l = end ? (size_t)(end - p) : strlen(p);
		if (l == 0 || l > 255 || n + 1 + l > cap)
			return KV_EINVAL;
		out[n++] = (unsigned char)l;
		memcpy(out + n, p, l);
		n += l;
		p += l;
		if (*p == ',')
			p++;
	}
	*outlen = n;
	return 0;
}

/* Checks a file can be opened, so errors name the file precisely. */
static int check_file(const char *what, const char *path, char *errbuf,
		      size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (f != NULL) {
		fclose(f);
		return 0;
	}
	int e = errno;
	snprintf(errbuf, errlen, "cannot open %s %s: %s", what, path,
		 strerror(e));
	if (e == ENOENT)
		return KV_ENOTFOUND;
	if (e == EACCES || e == EPERM)
		return KV_EPERM;
	return KV_EIO;
}

static int on_alpn_select(SSL *ssl, const unsigned char **out,
			  unsigned char *outlen, const unsigned char *in,
			  unsigned int inlen, void *arg)
{
	struct tls_ctx *ctx = arg;
	unsigned char *sel = NULL;
	(void)ssl;
	if (ctx->alpn_len == 0)
		return SSL_TLSEXT_ERR_NOACK;
	/* Server preference order: ctx->alpn is the first argument. */
	if (SSL_select_next_proto(&sel, outlen, ctx->alpn,
				  (unsigned int)ctx->alpn_len, in,
				  inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

static int ctx_new(const struct tls_config *cfg, bool server,
		   struct tls_ctx **out, char *errbuf, size_t errlen)
{
	struct tls_ctx *ctx;
	int rc;

	errbuf[0] = '\0';
	ERR_clear_error();
	if (server && (cfg->cert_file == NULL || cfg->key_file == NULL)) {
		snprintf(errbuf, errlen,
			 "a TLS server needs both a cert file and a key file");
		return KV_EINVAL;
	}
	if ((cfg->cert_file == NULL) != (cfg->key_file == NULL)) {
		snprintf(errbuf, errlen,
			 "cert file and key file must be given together");
		return KV_EINVAL;
	}
	if (server && cfg->client_cert_auth && cfg->trusted_ca_file == NULL) {
		snprintf(errbuf, errlen,
			 "client-cert-auth needs a trusted CA file");
		return KV_EINVAL;
	}
	ctx = calloc(1, sizeof(*ctx));
	if (ctx == NULL)
		return KV_ENOMEM;
	ctx->server = server;
	ctx->refs = 1;
	if (parse_alpn(cfg->alpn, ctx->alpn, sizeof(ctx->alpn),
		       &ctx->alpn_len) != 0) {
		snprintf(errbuf, errlen, "bad ALPN list \"%s\"", cfg->alpn);
		rc = KV_EINVAL;
		goto err_after_alloc;
	}
	ctx->ssl_ctx = SSL_CTX_new(server ? TLS_server_method()
					  : TLS_client_method());
	if (ctx->ssl_ctx == NULL) {
		rc = KV_ENOMEM;
		goto err_after_alloc;
	}
	SSL_CTX_set_min_proto_version(ctx->ssl_ctx, TLS1_2_VERSION);
	/* Idle connections give their record buffers back. */
	SSL_CTX_set_mode(ctx->ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_options(ctx->ssl_ctx, SSL_OP_NO_RENEGOTIATION |
					  SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (cfg->cert_file != NULL) {
		if ((rc = check_file("cert file", cfg->cert_file, errbuf,
				     errlen)) != 0 ||
		    (rc = check_file("key file", cfg->key_file, errbuf,
				     errlen)) != 0)
			goto err_after_ctx;
		if (SSL_CTX_use_certificate_chain_file(ctx->ssl_ctx,
						       cfg->cert_file) != 1) {
			snprintf(errbuf, errlen, "cert file %s",
				 cfg->cert_file);
			ssl_errors(errbuf, errlen);
			rc = KV_EINVAL;
			goto err_after_ctx;
		}
		if (SSL_CTX_use_PrivateKey_file(ctx->ssl_ctx, cfg->key_file,
						SSL_FILETYPE_PEM) != 1) {
			snprintf(errbuf, errlen, "key file %s",
				 cfg->key_file);
			ssl_errors(errbuf, errlen);
			if (strstr(errbuf, "mismatch") != NULL)
				snprintf(errbuf, errlen,
					 "key file %s does not match cert file %s",
					 cfg->key_file, cfg->cert_file);
			rc = KV_EINVAL;
			goto err_after_ctx;
		}
		if (SSL_CTX_check_private_key(ctx->ssl_ctx) != 1) {
			ERR_clear_error();
			snprintf(errbuf, errlen,
				 "key file %s does not match cert file %s",
				 cfg->key_file, cfg->cert_file);
			rc = KV_EINVAL;
			goto err_after_ctx;
		}
	}
	if (cfg->trusted_ca_file != NULL) {
		if ((rc = check_file("trusted CA file", cfg->trusted_ca_file,
				     errbuf, errlen)) != 0)
			goto err_after_ctx;
		if (SSL_CTX_load_verify_locations(ctx->ssl_ctx,
						  cfg->trusted_ca_file,
						  NULL) != 1) {
			snprintf(errbuf, errlen, "trusted CA file %s",
				 cfg->trusted_ca_file);
			ssl_errors(errbuf, errlen);
			rc = KV_EINVAL;
			goto err_after_ctx;
		}
	}
	if (server) {
		if (cfg->client_cert_auth) {
			STACK_OF(X509_NAME) *names =
				SSL_load_client_CA_file(cfg->trusted_ca_file);
			if (names != NULL)
				SSL_CTX_set_client_CA_list(ctx->ssl_ctx, names);
			ERR_clear_error();
			SSL_CTX_set_verify(ctx->ssl_ctx,
					   SSL_VERIFY_PEER |
					   SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
					   NULL);
		}
		SSL_CTX_set_alpn_select_cb(ctx->ssl_ctx, on_alpn_select, ctx);
	} else {
		if (cfg->trusted_ca_file != NULL)
			SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_PEER, NULL);
		if (ctx->alpn_len > 0 &&
		    SSL_CTX_set_alpn_protos(ctx->ssl_ctx, ctx->alpn,
					    (unsigned int)ctx->alpn_len) != 0) {
			rc = KV_ENOMEM;
			goto err_after_ctx;
		}
	}
	*out = ctx;
	return 0;

err_after_ctx:
	SSL_CTX_free(ctx->ssl_ctx);
err_after_alloc:
	free(ctx);
	ERR_clear_error();
	return rc;
}

int tls_ctx_new_server(const struct tls_config *cfg, struct tls_ctx **out,
		       char *errbuf, size_t errlen)
{
	return ctx_new(cfg, true, out, errbuf, errlen);
}

int tls_ctx_new_client(const struct tls_config *cfg, struct tls_ctx **out,
		       char *errbuf, size_t errlen)
{
	return ctx_new(cfg, false, out, errbuf, errlen);
}

void tls_ctx_free(struct tls_ctx *ctx)
{
	if (ctx == NULL || --ctx->refs > 0)
		return;
	SSL_CTX_free(ctx->ssl_ctx);
	free(ctx);
}

bool tls_ctx_is_server(const struct tls_ctx *ctx)
{
	return ctx->server;
}

int tls_engine_new(struct tls_ctx *ctx, const char *peer_name,
		   struct tls_engine **out)
{
	struct tls_engine *e = calloc(1, sizeof(*e));
	BIO *rbio, *wbio;

	if (e == NULL)
		return KV_ENOMEM;
	e->server = ctx->server;
	kv_buf_init(&e->early);
	e->ssl = SSL_new(ctx->ssl_ctx);
	if (e->ssl == NULL)
		goto err_after_alloc;
	rbio = BIO_new(BIO_s_mem());
	wbio = BIO_new(BIO_s_mem());
	if (rbio == NULL || wbio == NULL) {
		BIO_free(rbio);
		BIO_free(wbio);
		goto err_after_ssl;
	}
	SSL_set_bio(e->ssl, rbio, wbio); /* the SSL owns both now */
	if (ctx->server) {
		SSL_set_accept_state(e->ssl);
	} else {
		SSL_set_connect_state(e->ssl);
		if (peer_name != NULL) {
			unsigned char ip[16];
			bool is_ip = inet_pton(AF_INET, peer_name, ip) == 1 ||
				     inet_pton(AF_INET6, peer_name, ip) == 1;
			X509_VERIFY_PARAM *vp = SSL_get0_param(e->ssl);
			if (is_ip) {
				if (X509_VERIFY_PARAM_set1_ip_asc(vp,
								  peer_name) != 1)
					goto err_after_ssl;
			} else {
				if (SSL_set_tlsext_host_name(e->ssl,
							     peer_name) != 1 ||
				    SSL_set1_host(e->ssl, peer_name) != 1)
					goto err_after_ssl;
			}
		}
	}
	e->ctx = ctx;
	ctx->refs++;
	*out = e;
	return 0;

err_after_ssl:
	SSL_free(e->ssl);
err_after_alloc:
	free(e);
	ERR_clear_error();
	return KV_ENOMEM;
}

void tls_engine_free(struct tls_engine *e)
{
	if (e == NULL)
		return;
	SSL_free(e->ssl);
	tls_ctx_free(e->ctx);
	kv_buf_free(&e->early);
	free(e);
}

int tls_engine_feed(struct tls_engine *e, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	if (n > 0x7fffffff)
		return KV_EINVAL;
	if (BIO_write(SSL_get_rbio(e->ssl), p, (int)n) != (int)n) {
		ERR_clear_error();
		return KV_ENOMEM;
	}
	return 0;
}

/* Translates an SSL_get_error result. */
static int fail(struct tls_engine *e, int ret)
{
	int err = SSL_get_error(e->ssl, ret);
	long vr;

	switch (err) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return KV_EAGAIN;
	case SSL_ERROR_ZERO_RETURN:
		snprintf(e->errmsg, sizeof(e->errmsg), "peer closed TLS");
		return KV_ECLOSED;
	default:
		break;
	}
	e->failed = true;
	e->errmsg[0] = '\0';
	ssl_errors(e->errmsg, sizeof(e->errmsg));
	if (e->errmsg[0] == '\0')
		snprintf(e->errmsg, sizeof(e->errmsg), "TLS error %d", err);
	vr = SSL_get_verify_result(e->ssl);
	if (vr != X509_V_OK) {
		size_t used = strlen(e->errmsg);
		snprintf(e->errmsg + used, sizeof(e->errmsg) - used, " (%s)",
			 X509_verify_cert_error_string(vr));
		return KV_EPERM;
	}
	if (strstr(e->errmsg, "peer did not return a certificate") ||
	    strstr(e->errmsg, "certificate required") ||
	    strstr(e->errmsg, "certificate unknown") ||
	    strstr(e->errmsg, "bad certificate") ||
	    strstr(e->errmsg, "unknown ca"))
		return KV_EPERM;
	return KV_EPROTO;
}

static void on_handshake_done(struct tls_engine *e)
{
	const unsigned char *p = NULL;
	unsigned int n = 0;
	X509 *cert;

	e->done = true;
	SSL_get0_alpn_selected(e->ssl, &p, &n);
	if (p != NULL && n > 0 && n < sizeof(e->alpn)) {
		memcpy(e->alpn, p, n);
		e->alpn[n] = '\0';
	}
	cert = SSL_get1_peer_certificate(e->ssl);
	if (cert != NULL) {
		X509_NAME_get_text_by_NID(X509_get_subject_name(cert),
					  NID_commonName, e->peer_cn,
					  sizeof(e->peer_cn));
		X509_free(cert);
	}
}

int tls_engine_handshake(struct tls_engine *e)
{
	int ret, rc;

	if (e->failed)
		return KV_EPROTO;
	if (e->done)
		return 0;
	ERR_clear_error();
	ret = SSL_do_handshake(e->ssl);
	if (ret != 1)
		return fail(e, ret);
	on_handshake_done(e);
	if (e->early.len > 0) {
		rc = tls_engine_write(e, e->early.base, e->early.len);
		kv_buf_free(&e->early);
		if (rc != 0)
			return rc;
	}
	return 0;
}

bool tls_engine_handshake_done(const struct tls_engine *e)
{
	return e->done;
}

int tls_engine_read(struct tls_engine *e, void *buf, size_t cap,
		    size_t *nread)
{
	int ret, rc;

	*nread = 0;
	if ((rc = tls_engine_handshake(e)) != 0)
		return rc;
	if (cap > 0x7fffffff)
		cap = 0x7fffffff;
	ERR_clear_error();
	ret = SSL_read(e->ssl, buf, (int)cap);
	if (ret <= 0)
		return fail(e, ret);
	*nread = (size_t)ret;
	return 0;
}

int tls_engine_write(struct tls_engine *e, const void *p, size_t n)
{
	const unsigned char *c = p;
	int ret;

	if (e->failed)
		return KV_EPROTO;
	if (e->shut)
		return KV_ECLOSED;
	if (!e->done)
		return kv_buf_append(&e->early, p, n);
	ERR_clear_error();
	while (n > 0) {
		int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
		ret = SSL_write(e->ssl, c, chunk);
		if (ret <= 0)
			return fail(e, ret);
		c += ret;
		n -= (size_t)ret;
	}
	return 0;
}

void tls_engine_shutdown(struct tls_engine *e)
{
	if (e->shut || e->failed || !e->done) {
		e->shut = true;
		return;
	}
	e->shut = true;
	ERR_clear_error();
	(void)SSL_shutdown(e->ssl);
	ERR_clear_error();
}

size_t tls_engine_pending(const struct tls_engine *e)
{
	return BIO_ctrl_pending(SSL_get_wbio(e->ssl));
}

size_t tls_engine_drain(struct tls_engine *e, void *buf, size_t cap)
{
	int n;
	if (cap > 0x7fffffff)
		cap = 0x7fffffff;
	n = BIO_read(SSL_get_wbio(e->ssl), buf, (int)cap);
	return n > 0 ? (size_t)n : 0;
}

int tls_engine_drain_buf(struct tls_engine *e, struct kv_buf *out)
{
	size_t n = tls_engine_pending(e);
	if (n == 0)
		return 0;
	if (kv_buf_reserve(out, n) != 0)
		return KV_ENOMEM;
	out->len += tls_engine_drain(e, out->base + out->len, n);
	return 0;
}

const char *tls_engine_alpn(const struct tls_engine *e)
{
	return e->alpn[0] ? e->alpn : NULL;
}

const char *tls_engine_version(const struct tls_engine *e)
{
	return e->done ? SSL_get_version(e->ssl) : NULL;
}

const char *tls_engine_peer_cn(struct tls_engine *e)
{
	return e->peer_cn[0] ? e->peer_cn : NULL;
}

int tls_engine_peer_check_host(struct tls_engine *e, const char *host)
{
	unsigned char ip[16];
	X509 *cert;
	int ok;

	if (!e->done)
		return KV_EINVAL;
	e->errmsg[0] = '\0';
	if ((SSL_get_verify_mode(e->ssl) & SSL_VERIFY_PEER) == 0) {
		snprintf(e->errmsg, sizeof(e->errmsg),
			 "peer certificates are not verified by this context");
		return KV_EPERM;
	}
	cert = SSL_get1_peer_certificate(e->ssl);
	if (cert == NULL) {
		snprintf(e->errmsg, sizeof(e->errmsg),
			 "peer sent no certificate");
		return KV_EPERM;
	}
	if (SSL_get_verify_result(e->ssl) != X509_V_OK) {
		snprintf(e->errmsg, sizeof(e->errmsg),
			 "peer certificate not verified (%s)",
			 X509_verify_cert_error_string(
				 SSL_get_verify_result(e->ssl)));
		X509_free(cert);
		return KV_EPERM;
	}
	ERR_clear_error();
	if (inet_pton(AF_INET, host, ip) == 1 ||
	    inet_pton(AF_INET6, host, ip) == 1)
		ok = X509_check_ip_asc(cert, host, 0);
	else
		ok = X509_check_host(cert, host, strlen(host), 0, NULL);
	X509_free(cert);
	ERR_clear_error();
	if (ok != 1) {
		snprintf(e->errmsg, sizeof(e->errmsg),
			 "peer certificate does not cover %s", host);
		return KV_EPERM;
	}
	return 0;
}

const char *tls_engine_errmsg(const struct tls_engine *e)
{
	return e->errmsg;
}

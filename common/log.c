#include "common/log.h"

#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "kv/errors.h"

static enum kv_log_level cur_level = KV_LOG_INFO;
static enum kv_log_format cur_format = KV_LOG_LOGFMT;
static int cur_fd = 2;

static const char *level_names[] = {"debug", "info", "warn", "error", "fatal"};

int kv_log_parse_level(const char *s, enum kv_log_level *out)
{
	static const struct {
		const char *name;
		enum kv_log_level level;
	} names[] = {
		{"debug", KV_LOG_DEBUG}, {"info", KV_LOG_INFO},
		{"warn", KV_LOG_WARN},   {"warning", KV_LOG_WARN},
		{"error", KV_LOG_ERROR}, {"fatal", KV_LOG_FATAL},
		{"panic", KV_LOG_FATAL}, {"dpanic", KV_LOG_FATAL},
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcasecmp(s, names[i].name) == 0) {
			*out = names[i].level;
			return 0;
		}
	}
	return KV_EINVAL;
}

void kv_log_set_level(enum kv_log_level level)
{
	cur_level = level;
}

void kv_log_set_format(enum kv_log_format fmt)
{
	cur_format = fmt;
}

void kv_log_set_fd(int fd)
{
	cur_fd = fd;
}

bool kv_log_enabled(enum kv_log_level level)
{
	return level >= cur_level;
}

static void put_json_string(struct kv_buf *b, const char *s, size_t n)
{
	kv_buf_putc(b, '"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			kv_buf_putc(b, '\\');
			kv_buf_putc(b, c);
		} else if (c < 0x20) {
			kv_buf_printf(b, "\\u%04x", c);
		} else {
			kv_buf_putc(b, c);
		}
	}
	kv_buf_putc(b, '"');
}

static bool needs_quotes(const char *s)
{
	if (*s == '\0')
		return true;
	for (; *s; s++)
		if (*s == ' ' || *s == '"' || *s == '=' || (unsigned char)*s < 0x20)
			return true;
	return false;
}

static void put_logfmt_value(struct kv_buf *b, const char *s)
{
	if (!needs_quotes(s)) {
		kv_buf_append(b, s, strlen(s));
		return;
	}
	put_json_string(b, s, strlen(s)); /* logfmt quoting = JSON quoting */
}

/* Converts "k=v k2=\"a b\"" into JSON members appended to b. */
static void fields_to_json(struct kv_buf *b, const char *f)
{
	while (*f) {
		const char *k, *v;
		size_t kn, vn;
		struct kv_buf val = KV_BUF_INIT;

		while (*f == ' ')
			f++;
		if (!*f)
			break;
		k = f;
		while (*f && *f != '=' && *f != ' ')
			f++;
		kn = (size_t)(f - k);
		if (*f == '=') {
			f++;
			if (*f == '"') {
				f++;
				while (*f && *f != '"') {
					if (*f == '\\' && f[1])
						f++;
					kv_buf_putc(&val, (unsigned char)*f++);
				}
				if (*f == '"')
					f++;
			} else {
				v = f;
				while (*f && *f != ' ')
					f++;
				kv_buf_append(&val, v, (size_t)(f - v));
			}
		}
		vn = val.len;
		kv_buf_putc(b, ',');
		put_json_string(b, k, kn);
		kv_buf_putc(b, ':');
		put_json_string(b, vn ? (const char *)val.base : "", vn);
		kv_buf_free(&val);
	}
}

void kv_log(enum kv_log_level level, const char *module, const char *msg,
	    const char *fields, ...)
{
	struct kv_buf line = KV_BUF_INIT;
	struct kv_buf fb = KV_BUF_INIT;
	char ts[48];
	uint64_t us = kv_wall_us();
	time_t secs = (time_t)(us / 1000000u);
	struct tm tm;
	va_list ap;

	if (!kv_log_enabled(level))
		return;
	gmtime_r(&secs, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, (unsigned)(us % 1000000u));
	if (fields != NULL) {
		va_start(ap, fields);
		char tmp[1];
		va_list ap2;
		va_copy(ap2, ap);
		int n = vsnprintf(tmp, 0, fields, ap2);
		va_end(ap2);
		if (n > 0 && kv_buf_reserve(&fb, (size_t)n + 1) == 0) {
			vsnprintf((char *)fb.base, (size_t)n + 1, fields, ap);
			fb.len = (size_t)n;
		}
		va_end(ap);
	}
	if (cur_format == KV_LOG_JSON) {
		kv_buf_printf(&line, "{\"ts\":\"%s\",\"level\":\"%s\",\"mod\":",
			      ts, level_names[level]);
		put_json_string(&line, module, strlen(module));
		kv_buf_printf(&line, ",\"msg\":");
		put_json_string(&line, msg, strlen(msg));
		if (fb.len)
			fields_to_json(&line, (const char *)fb.base);
		kv_buf_append(&line, "}\n", 2);
	} else {
		kv_buf_printf(&line, "ts=%s level=%s mod=%s msg=", ts,
			      level_names[level], module);
		put_logfmt_value(&line, msg);
		if (fb.len) {
			kv_buf_putc(&line, ' ');
			kv_buf_append(&line, fb.base, fb.len);
		}
		kv_buf_putc(&line, '\n');
	}
	if (line.len) {
		ssize_t w = write(cur_fd, line.base, line.len);
		(void)w; /* nowhere to report a failed log write */
	}
	kv_buf_free(&line);
	kv_buf_free(&fb);
}

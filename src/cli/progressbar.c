/* progressbar.c: a one-line progress bar on a terminal: the steps of a
 * job, and the bytes of a file downloading (run and pull). */
#include "config.h"

#include <sys/ioctl.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "spool/util.h"

void
progress_bar_init(struct progress_bar *b, FILE *out)
{
	memset(b, 0, sizeof *b);
	b->out = out;
}

void
progress_bar_clear(struct progress_bar *b)
{
	if (b->shown) {
		fputs("\r\033[K", b->out);
		fflush(b->out);
		b->shown = 0;
	}
}

static void
eta_text(double s, char *buf, size_t size)
{
	if (s < 0)
		snprintf(buf, size, "--");
	else if (s < 60)
		snprintf(buf, size, "%.0fs", s);
	else if (s < 3600)
		snprintf(buf, size, "%dm%02ds", (int)(s / 60), (int)s % 60);
	else
		snprintf(buf, size, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
}

void
progress_bar_display(void *user, const struct progress_event *e)
{
	struct progress_bar *b = user;
	char bar[31], eta[32];
	double frac, now = util_now_mono();
	int i, fill;

	if (strcmp(e->event, "loading") == 0) {
		progress_bar_clear(b);
		fprintf(b->out, "%s: loading the model...", e->job);
		fflush(b->out);
		b->shown = 1;
		return;
	}
	if (strcmp(e->event, "step") != 0) {
		progress_bar_clear(b);
		return;
	}
	/* Redraw at most 20 times a second, and always at the last step. */
	if (now - b->last < 0.05 && e->step != e->steps)
		return;
	b->last = now;
	frac = e->steps > 0 && e->images > 0 ?
	    ((double)e->image + (double)e->step / e->steps) / e->images : 0;
	fill = (int)(frac * 30 + 0.5);
	for (i = 0; i < 30; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[30] = '\0';
	eta_text(e->eta_s, eta, sizeof eta);
	fprintf(b->out, "\r\033[K%s [%s] %3.0f%%  image %d/%d  step %d/%d  ETA %s",
	    e->job, bar, frac * 100, e->image + 1, e->images, e->step, e->steps, eta);
	fflush(b->out);
	b->shown = 1;
}

void
progress_bar_size(long long n, char *buf, size_t size)
{
	util_bytes_text(n, "?", buf, size);
}

/* The columns of the terminal out is, or 0 when it is not one. */
static int
terminal_columns(FILE *out)
{
	struct winsize ws;
	int fd = fileno(out);

	if (fd < 0 || !isatty(fd) || ioctl(fd, TIOCGWINSZ, &ws) < 0)
		return 0;
	return ws.ws_col;
}

void
progress_bar_bytes(struct progress_bar *b, const char *label, long long done,
    long long total)
{
	char bar[31], nums[96], sdone[32], stotal[32], rate[40] = "", pct[8];
	const char *shown_label = label;
	double now = util_now_mono(), frac;
	size_t len = strlen(label), nlen, avail, room;
	int i, fill, width = 30, cols;

	if (strncmp(b->file, label, sizeof b->file - 1) != 0) {
		snprintf(b->file, sizeof b->file, "%s", label);
		b->file_start = now;
		b->file_start_bytes = done;
	} else if (now - b->last < 0.09 && (total < 0 || done < total))
		return;
	b->last = now;
	frac = total > 0 ? (double)done / (double)total : 0;
	if (frac > 1)
		frac = 1;
	if (total >= 0)
		snprintf(pct, sizeof pct, "%3.0f%%", frac * 100);
	else
		snprintf(pct, sizeof pct, "  ?%%");
	progress_bar_size(done, sdone, sizeof sdone);
	progress_bar_size(total, stotal, sizeof stotal);
	if (now - b->file_start >= 0.2 && done >= b->file_start_bytes) {
		progress_bar_size((long long)((double)(done - b->file_start_bytes) /
		    (now - b->file_start)), rate + 1, sizeof rate - 3);
		rate[0] = ' ';
		strcat(rate, "/s");
	}
	snprintf(nums, sizeof nums, " %s %s/%s%s", pct, sdone, stotal, rate);
	/* Keep to one line (a wrapped line cannot be redrawn with \r): a
	 * shorter bar, then the end of the label (where the file name is)
	 * after "...". */
	cols = terminal_columns(b->out);
	nlen = strlen(nums) + (rate[0] == '\0' ? 12 : 0);	/* the rate to come */
	if (cols > 0 && (size_t)cols > nlen + 3 + 10 + 12) {
		avail = (size_t)cols - 1 - nlen - 3;	/* " [" "]" */
		if (len + (size_t)width > avail)
			width = avail > len && avail - len >= 10 ?
			    (int)(avail - len) : 10;
		room = avail - (size_t)width;
		if (len > room) {
			shown_label = label + len - (room - 3);
			while (((unsigned char)*shown_label & 0xc0) == 0x80)
				shown_label++;	/* not inside a UTF-8 character */
		}
	}
	fill = (int)(frac * width + 0.5);
	for (i = 0; i < width; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[width] = '\0';
	fprintf(b->out, "\r\033[K%s%s [%s]%s", shown_label != label ? "..." : "",
	    shown_label, bar, nums);
	fflush(b->out);
	b->shown = 1;
}

/* progressbar.c: a one-line progress bar on a terminal. */
#include "config.h"

#include <stdio.h>
#include <string.h>

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

/* Nodes that a job uses exclusively (backup and mirror targets, mirror
 * sources), shared by every job type so that two jobs never write the same
 * node behind each other's back. */
#pragma once

#include <stdbool.h>

/* True if some job has claimed the node named `node_name`. */
bool job_node_claimed(const char *node_name);
/* Claims the node for a job (the caller checked job_node_claimed first). */
void job_node_claim(const char *node_name);
/* Releases a claim made with job_node_claim. */
void job_node_release(const char *node_name);
